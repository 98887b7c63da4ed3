// The start form of a model, made from its "Start a training" operation in
// the OpenAPI document (the same field descriptions as the API's spec).

import { ApiError, el, json, trainPath } from "./api.js";

const TRAIN_PATH = /\/v2\/models\/([^/]+)\/train\/$/;

/** The models that can be trained: [{name, operation}], by name. */
export function trainable(doc) {
  const found = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    const match = TRAIN_PATH.exec(path);
    if (match && item.post) {
      found.push({ name: decodeURIComponent(match[1]), operation: item.post });
    }
  }
  return found.sort((a, b) => a.name.localeCompare(b.name));
}

function resolve(doc, schema) {
  let seen = 0;
  while (schema && schema.$ref && seen++ < 10) {
    const path = schema.$ref.replace(/^#\//, "").split("/");
    schema = path.reduce((node, key) => (node ? node[key] : undefined), doc);
  }
  return schema || {};
}

function typeOf(schema) {
  const types = [].concat(schema.type || "string").filter((t) => t !== "null");
  return types[0] || "string";
}

function isFile(schema) {
  if (schema.format === "binary" || schema.contentMediaType) return true;
  return typeOf(schema) === "array" && !!schema.items && isFile(schema.items);
}

/** The operation's arguments: [{name, schema, description, required}]. */
export function fieldsOf(doc, operation) {
  const fields = [];
  for (const param of operation.parameters || []) {
    const p = resolve(doc, param);
    if (p.in !== "query") continue;
    const schema = resolve(doc, p.schema || {});
    fields.push({
      name: p.name,
      schema,
      description: p.description || schema.description || "",
      required: !!p.required,
    });
  }
  const content = (operation.requestBody && operation.requestBody.content) || {};
  for (const type of ["multipart/form-data", "application/x-www-form-urlencoded"]) {
    if (!content[type]) continue;
    const body = resolve(doc, content[type].schema || {});
    const required = new Set(body.required || []);
    for (const [name, raw] of Object.entries(body.properties || {})) {
      if (fields.some((f) => f.name === name)) continue;
      const schema = resolve(doc, raw);
      fields.push({
        name,
        schema,
        description: schema.description || "",
        required: required.has(name),
      });
    }
    break;
  }
  return fields;
}

function input(field) {
  const { name, schema } = field;
  const type = typeOf(schema);
  const common = { name, id: `arg-${name}`, required: field.required };
  if (isFile(schema)) {
    return el("input", { ...common, type: "file", multiple: type === "array" });
  }
  const choices = schema.enum || (schema.items && schema.items.enum);
  if (choices && type !== "array") {
    const select = el("select", common, field.required ? null : el("option", { value: "" }, ""));
    for (const choice of choices) {
      if (choice === null) continue;
      select.append(el("option", { value: JSON.stringify(choice) }, String(choice)));
    }
    if (schema.default !== undefined) select.value = JSON.stringify(schema.default);
    return select;
  }
  if (type === "boolean") {
    const select = el(
      "select",
      common,
      el("option", { value: "" }, ""),
      el("option", { value: "true" }, "true"),
      el("option", { value: "false" }, "false"),
    );
    if (typeof schema.default === "boolean") select.value = String(schema.default);
    return select;
  }
  const attrs = { ...common, type: "text" };
  if (type === "integer" || type === "number") {
    Object.assign(attrs, { type: "number", step: type === "integer" ? "1" : "any" });
    if (schema.minimum !== undefined) attrs.min = String(schema.minimum);
    if (schema.maximum !== undefined) attrs.max = String(schema.maximum);
  } else if (type === "array" || type === "object") {
    attrs.placeholder = type === "array" ? '["a", "b"] or a, b' : '{"key": "value"}';
  }
  const node = el("input", attrs);
  if (schema.default !== undefined && schema.default !== null) {
    node.value = typeof schema.default === "object" ? JSON.stringify(schema.default) : String(schema.default);
  }
  node.dataset.kind = type;
  return node;
}

/** The value typed into a field, as JSON would carry it (undefined: left empty). */
function valueOf(node) {
  if (node.type === "file") return node.files.length ? [...node.files] : undefined;
  const text = node.value.trim();
  if (text === "") return undefined;
  if (node.tagName === "SELECT") return JSON.parse(text);
  const kind = node.dataset.kind;
  if (kind === "integer" || kind === "number") return Number(text);
  if (kind === "array" || kind === "object") {
    try {
      return JSON.parse(text);
    } catch (error) {
      if (kind === "array") return text.split(",").map((item) => item.trim());
      throw new Error(`${node.name}: not JSON: ${text}`);
    }
  }
  return text;
}

/** The request of a filled form: JSON, or multipart when it holds a file. */
export function requestOf(form) {
  const values = {};
  let files = false;
  for (const node of form.querySelectorAll("input[name], select[name]")) {
    const value = valueOf(node);
    if (value === undefined) continue;
    values[node.name] = value;
    if (node.type === "file") files = true;
  }
  if (!files) {
    return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(values) };
  }
  const body = new FormData();
  for (const [name, value] of Object.entries(values)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      body.append(name, item instanceof File ? item : typeof item === "string" ? item : JSON.stringify(item));
    }
  }
  return { method: "POST", body };
}

/** The form that starts a training of ``model``; ``started(record)`` after. */
export function startForm(doc, model, started) {
  const form = el("form", { class: "start", "data-model": model.name });
  for (const field of fieldsOf(doc, model.operation)) {
    const node = input(field);
    form.append(el("label", { for: node.id }, field.name + (field.required ? " *" : "")), node);
    if (field.description) form.append(el("div", { class: "help" }, field.description));
  }
  const error = el("div", { class: "error", hidden: true });
  const button = el("button", { type: "submit", class: "start" }, "Start training");
  form.append(el("div", { class: "actions" }, button), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    button.disabled = true;
    try {
      const record = await json(trainPath(model.name), requestOf(form));
      started(record);
    } catch (failure) {
      const text = failure instanceof ApiError ? `${failure.status}: ${failure.message}` : String(failure);
      error.textContent = text;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
