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

/** A default, as the spec may give it: in the (resolved) schema, on the
 * parameter itself (Swagger 2.0 style), or in an allOf branch. */
function defaultOf(...nodes) {
  for (const node of nodes) {
    if (!node) continue;
    if (node.default !== undefined) return node.default;
    for (const branch of node.allOf || []) {
      if (branch && branch.default !== undefined) return branch.default;
    }
  }
  return undefined;
}

/** The operation's arguments: [{name, schema, description, required, default}],
 * the plugin's own first, then the framework's (deepaas_gpus). */
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
      default: defaultOf(schema, p.schema, p),
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
        default: defaultOf(schema, raw),
      });
    }
    break;
  }
  const framework = (f) => f.name.startsWith("deepaas_");
  return [...fields.filter((f) => !framework(f)), ...fields.filter(framework)];
}

/** A default as text: what the field is prefilled with, and its placeholder. */
function shown(value) {
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function input(field, id) {
  const { name, schema } = field;
  const type = typeOf(schema);
  const given = field.default !== undefined && field.default !== null;
  const common = { name, id, required: field.required };
  if (isFile(schema)) {
    return el("input", { ...common, type: "file", multiple: type === "array" });
  }
  const choices = schema.enum || (schema.items && schema.items.enum);
  const options = choices && type !== "array" ? choices.filter((c) => c !== null)
    : type === "boolean" ? [true, false] : null;
  if (options) {
    // the default is selected, and stays so on a reset (its "selected" attribute)
    const select = el("select", common, field.required ? null : el("option", { value: "" }, ""));
    for (const choice of options) {
      const selected = given && JSON.stringify(choice) === JSON.stringify(field.default);
      const label = String(choice) + (selected ? " (default)" : "");
      select.append(el("option", { value: JSON.stringify(choice), selected: selected ? "" : null }, label));
    }
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
  if (given) {
    // prefilled (the "value" attribute: a reset keeps it); cleared, it says
    // what the server then applies
    attrs.value = shown(field.default);
    attrs.placeholder = `default: ${shown(field.default)}`;
  }
  const node = el("input", attrs);
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

/** An element id of ``model``'s field ``name``, unique on the page (each
 * model has its form): both escaped, "/" between them. */
export function fieldId(model, name) {
  return `arg/${encodeURIComponent(model)}/${encodeURIComponent(name)}`;
}

/** The form that starts a training of ``model``; ``started(record)`` after.
 * ``gpus``: how many GPUs the server's trainings can lease (0: no
 * deepaas_gpus field; undefined: not said, shown). */
export function startForm(doc, model, started, gpus) {
  const form = el("form", { class: "start", "data-model": model.name });
  for (const field of fieldsOf(doc, model.operation)) {
    if (field.name === "deepaas_gpus" && gpus === 0) continue;
    const node = input(field, fieldId(model.name, field.name));
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
