// Training curves of one round: the RM run and the PPO run, fetched incrementally
// (GET /api/v1/runs/{id}/metrics/?after=STEP) while a run is going, then left alone.

import { LineChart } from "./linechart.js";
import { fill } from "./http.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

const CHARTS = {
  rm: [
    ["chart-rm-loss", { title: "Reward model loss", series: [{ key: "rm/loss", label: "train loss" }] }],
    ["chart-rm-accuracy", {
      title: "Reward model accuracy", yMin: 0, yMax: 1,
      series: [
        { key: "rm/accuracy", label: "train" },
        { key: "rm/eval_accuracy", label: "held-out" },
        { key: "rm/heldout_accuracy", label: "held-out + labeler (gate)" },
      ],
    }],
  ],
  ppo: [
    ["chart-ppo-reward", {
      title: "PPO reward",
      series: [
        { key: "env/score_mean", label: "score (RM + rules)" },
        { key: "env/reward_mean", label: "reward − KL penalty" },
      ],
    }],
    ["chart-ppo-kl", { title: "KL to the SFT policy", series: [{ key: "objective/kl", label: "KL" }] }],
    ["chart-ppo-beta", { title: "KL coefficient β", series: [{ key: "objective/kl_coef", label: "β (kl_coef)" }] }],
    ["chart-ppo-entropy", { title: "Policy entropy", series: [{ key: "objective/entropy", label: "entropy" }] }],
  ],
};

class RunFeed {
  constructor(kind, charts) {
    this.kind = kind;
    this.charts = charts;
    this.runId = null;
    this.finished = false; // the run ended and its last points were fetched
    this.inFlight = false;
  }

  follow(run) {
    const id = run ? run.id : null;
    if (id !== this.runId) {
      this.runId = id;
      this.finished = false;
      for (const chart of this.charts) {
        chart.options.empty = run ? `Waiting for the first ${this.kind.toUpperCase()} step` : `No ${this.kind.toUpperCase()} run in this round`;
        chart.reset();
        chart.render();
      }
    }
  }

  async refresh(api, urlTemplate) {
    if (this.runId === null || this.finished || this.inFlight) return;
    this.inFlight = true;
    try {
      const after = this.charts[0].lastX;
      const runId = this.runId;
      const data = await api.get(`${fill(urlTemplate, runId)}?after=${after}`);
      if (runId !== this.runId) return; // the selection changed meanwhile
      for (const chart of this.charts) chart.append(data.series);
      // The API reads the run before its points: if the run had ended, every point is in.
      if (TERMINAL.has(data.run.status)) this.finished = true;
    } finally {
      this.inFlight = false;
    }
  }
}

export class Curves {
  constructor() {
    this.feeds = Object.entries(CHARTS).map(([kind, specs]) => new RunFeed(
      kind, specs.map(([id, options]) => new LineChart(document.getElementById(id), options)),
    ));
  }

  // Follow the newest run of each kind in `round` (null: nothing to plot).
  follow(round) {
    for (const feed of this.feeds) {
      const runs = round ? round.runs.filter((r) => r.kind === feed.kind) : [];
      feed.follow(runs.length ? runs[runs.length - 1] : null);
    }
  }

  refresh(api, urlTemplate) {
    return Promise.all(this.feeds.map((feed) => feed.refresh(api, urlTemplate)));
  }
}

export function perRoundCharts() {
  return {
    accuracy: new LineChart(document.getElementById("chart-round-accuracy"), {
      title: "RM held-out accuracy per round", xLabel: "round", yMin: 0, yMax: 1, width: 640, height: 210,
      series: [{ key: "accuracy", label: "held-out pairs" }, { key: "labeler", label: "held-out labeler" }],
      empty: "No reward model trained yet",
    }),
    comparisons: new LineChart(document.getElementById("chart-round-comparisons"), {
      title: "Rankings and comparisons per round", xLabel: "round", bars: true, width: 640, height: 210,
      series: [{ key: "rankings", label: "rankings" }, { key: "comparisons", label: "comparisons (pairs)" }],
      empty: "No rankings yet",
    }),
  };
}
