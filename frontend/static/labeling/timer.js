// Time spent on a task, measured in the browser: only while the page is visible, so a
// labeler who leaves a tab open over lunch does not report an hour on one ranking.

export class ActiveTimer {
  constructor(doc = document) {
    this.doc = doc;
    this.totalMs = 0;
    this.since = null; // performance.now() when the current visible stretch began
    this.running = false;
    doc.addEventListener("visibilitychange", () => this.#onVisibilityChange());
  }

  start() {
    this.totalMs = 0;
    this.running = true;
    this.since = this.doc.hidden ? null : performance.now();
  }

  elapsedMs() {
    const open = this.since === null ? 0 : performance.now() - this.since;
    return Math.round(this.totalMs + open);
  }

  #onVisibilityChange() {
    if (!this.running) return;
    if (this.doc.hidden && this.since !== null) {
      this.totalMs += performance.now() - this.since;
      this.since = null;
    } else if (!this.doc.hidden && this.since === null) {
      this.since = performance.now();
    }
  }
}
