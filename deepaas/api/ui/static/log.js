// A training's log, followed: GET .../logs?follow=true streams what the
// training writes until it ends (or the server drains); then it is asked
// again from the byte offset reached, until the training has ended.

import { call, state } from "./api.js";

/** At most this much text is kept in the page (the log's end). */
const KEEP = 256 * 1024;

export class LogView {
  /** Follow ``path``'s log ("v2/models/m/train/uuid") into ``pre``. */
  constructor(pre, path, finished) {
    this.pre = pre;
    this.path = path;
    this.finished = finished; // async () => whether the training has ended
    this.offset = 0;
    this.text = "";
    this.follow = true;
    this.aborter = new AbortController();
    state.logBytes = 0;
  }

  append(text) {
    if (!text) return;
    const atEnd = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    this.text = (this.text + text).slice(-KEEP);
    this.pre.textContent = this.text;
    this.pre.dataset.bytes = String(this.offset);
    state.logBytes = this.offset;
    if (this.follow && atEnd) this.pre.scrollTop = this.pre.scrollHeight;
  }

  /** Read until the training has ended and its log is read to its end. */
  async run() {
    const signal = this.aborter.signal;
    while (!signal.aborted) {
      const ended = await this.finished();
      const query = ended ? "" : "&follow=true";
      const response = await call(`${this.path}/logs?offset=${this.offset}${query}`, { signal });
      if (!response.ok) {
        this.append(`[the log cannot be read: ${response.status} ${response.statusText}]\n`);
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        this.offset += value.byteLength;
        this.append(decoder.decode(value, { stream: true }));
      }
      this.append(decoder.decode());
      if (ended) {
        this.pre.dataset.ended = "true";
        return;
      }
      // The stream ended: the training did, or the server drains (then
      // the stream ends at once: wait a little before asking again).
      if (!(await this.finished())) await pause(1000, signal);
    }
  }

  start() {
    this.run().catch((error) => {
      if (!this.aborter.signal.aborted) this.append(`[${error}]\n`);
    });
  }

  stop() {
    this.aborter.abort();
  }
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
