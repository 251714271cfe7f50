// The ranking under construction: tie groups of response ids, best first. No DOM here.
//
// Keyboard semantics (PRODUCT.md, "Browser"): append places a card after the ones already
// placed; after markTie() the next appended card joins the last group (a tie);
// removeLast() takes back the card placed last. Drag and drop uses moveToGroup (tie) and
// moveToNewGroup (a rank of its own at a position).

export class RankingState {
  constructor(ids) {
    this.ids = [...ids];
    this.groups = []; // [[id, ...], ...] best first
    this.history = []; // ids in the order they were placed, for removeLast
    this.tieNext = false;
  }

  isPlaced(id) {
    return this.history.includes(id);
  }

  get placedCount() {
    return this.history.length;
  }

  isComplete() {
    return this.history.length === this.ids.length;
  }

  groupIndexOf(id) {
    return this.groups.findIndex((group) => group.includes(id));
  }

  order() {
    return this.groups.map((group) => [...group]);
  }

  append(id) {
    this.#known(id);
    if (this.isPlaced(id)) return false;
    if (this.tieNext && this.groups.length > 0) this.groups[this.groups.length - 1].push(id);
    else this.groups.push([id]);
    this.tieNext = false;
    this.history.push(id);
    return true;
  }

  markTie() {
    if (this.groups.length === 0 || this.isComplete()) return false;
    this.tieNext = true;
    return true;
  }

  cancelTie() {
    this.tieNext = false;
  }

  removeLast() {
    this.tieNext = false;
    const id = this.history.pop();
    if (id === undefined) return null;
    this.#detach(id);
    return id;
  }

  unplace(id) {
    if (!this.isPlaced(id)) return false;
    this.history.splice(this.history.indexOf(id), 1);
    this.#detach(id);
    return true;
  }

  clear() {
    this.groups = [];
    this.history = [];
    this.tieNext = false;
  }

  // Tie `id` with the group at index `groupIndex` (drop onto a group).
  moveToGroup(id, groupIndex) {
    this.#known(id);
    const target = this.groups[groupIndex];
    if (!target || target.includes(id)) return false;
    this.#detachKeepingHistory(id);
    target.push(id);
    return true;
  }

  // Give `id` a rank of its own, before the group now at `position` (or last).
  moveToNewGroup(id, position) {
    this.#known(id);
    const before = this.groups[position];
    const current = this.groups[this.groupIndexOf(id)];
    const isAlone = current && current.length === 1;
    if (isAlone && (current === before || current === this.groups[position - 1])) return false;
    this.#detachKeepingHistory(id);
    const at = before ? this.groups.indexOf(before) : this.groups.length;
    this.groups.splice(at, 0, [id]);
    return true;
  }

  // A plain copy for sessionStorage (a half-finished ranking survives a reload).
  snapshot() {
    return { groups: this.order(), history: [...this.history], tieNext: this.tieNext };
  }

  // Take back a snapshot of the same responses; false (and nothing changed) when it does
  // not fit them: unknown or repeated ids, or groups and history that disagree.
  restore(snapshot) {
    const groups = snapshot?.groups;
    const history = snapshot?.history;
    if (!Array.isArray(groups) || !Array.isArray(history)) return false;
    const flat = groups.flat();
    const known = (id) => this.ids.includes(id);
    if (groups.some((group) => !Array.isArray(group) || group.length === 0)) return false;
    if (!flat.every(known) || new Set(flat).size !== flat.length) return false;
    if (history.length !== flat.length || !history.every((id) => flat.includes(id))) return false;
    this.groups = groups.map((group) => [...group]);
    this.history = [...history];
    this.tieNext = Boolean(snapshot.tieNext) && this.groups.length > 0 && !this.isComplete();
    return true;
  }

  #detachKeepingHistory(id) {
    if (this.isPlaced(id)) this.#detach(id);
    else this.history.push(id);
  }

  #detach(id) {
    const index = this.groupIndexOf(id);
    if (index < 0) return;
    const group = this.groups[index];
    group.splice(group.indexOf(id), 1);
    if (group.length === 0) this.groups.splice(index, 1);
  }

  #known(id) {
    if (!this.ids.includes(id)) throw new Error(`Unknown response ${id}`);
  }
}
