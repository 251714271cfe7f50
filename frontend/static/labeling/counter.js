// The work counter of the ranking screen: this browser session (kept in sessionStorage
// across reloads), today and in total (from the server), and open tasks left.

export class WorkCounter {
  constructor({ slug, counts, root = document }) {
    this.key = `rlhf-studio:session-count:${slug}`;
    this.root = root;
    this.counts = { session: Number(sessionStorage.getItem(this.key) || 0), ...counts };
  }

  render() {
    for (const node of this.root.querySelectorAll("[data-count]")) {
      const value = this.counts[node.dataset.count];
      node.textContent = typeof value === "number" ? String(value) : "–";
    }
  }

  // The server's counts ({done_today, done_total, remaining}), sent with a task fetched on
  // demand. A prefetched task's counts predate the submission before it: not used.
  sync(server) {
    const fresh = { today: server.done_today, total: server.done_total, remaining: server.remaining };
    for (const [name, value] of Object.entries(fresh)) if (typeof value === "number") this.counts[name] = value;
    this.render();
  }

  // A task left the labeler's queue: ranked (counts as work) or skipped.
  finished({ ranked }) {
    const { counts } = this;
    if (typeof counts.remaining === "number") counts.remaining = Math.max(0, counts.remaining - 1);
    if (ranked) {
      counts.session += 1;
      sessionStorage.setItem(this.key, String(counts.session));
      for (const name of ["today", "total"]) if (typeof counts[name] === "number") counts[name] += 1;
    }
    this.render();
  }
}
