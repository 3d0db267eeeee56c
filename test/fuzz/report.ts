import { writeFileSync } from 'node:fs';
import { clip } from './hostile.js';

/** One broken promise of the service, with enough of the request to reproduce it. */
export interface Violation {
  transport: 'rest' | 'raw-tcp' | 'grpc' | 'process' | 'log' | 'data';
  /** Route (e.g. `POST /v1/datasets/{dataset}/items`) or gRPC method. */
  route: string;
  /** What was wrong: 5xx, error-shape, accepted-invalid, INTERNAL, crash, … */
  rule: string;
  /** HTTP status or gRPC status name. */
  status: string;
  /** The error code the answer carried, if any. */
  code: string;
  /** The input classes of the request (e.g. nul, lone-surrogate, wrong-type). */
  classes: string[];
  request: string;
  answer: string;
}

export class Violations {
  readonly all: Violation[] = [];

  add(v: Violation): void {
    this.all.push(v);
  }

  get size(): number {
    return this.all.length;
  }

  /**
   * Grouped by transport, rule, status and error code (most severe first), each line naming the
   * routes it hit with their counts and the input classes seen, followed by one example. At most
   * `maxLines` lines; the JSON report has everything.
   */
  summary(title: string, maxLines = 40): string {
    const groups = new Map<string, { v: Violation; count: number; routes: Map<string, number>; classes: Map<string, number> }>();
    for (const v of this.all) {
      const key = `${v.transport} | ${v.rule} | ${v.status} ${v.code}`;
      let g = groups.get(key);
      if (!g) groups.set(key, (g = { v, count: 0, routes: new Map(), classes: new Map() }));
      g.count++;
      g.routes.set(v.route, (g.routes.get(v.route) ?? 0) + 1);
      for (const c of v.classes) g.classes.set(c, (g.classes.get(c) ?? 0) + 1);
    }
    const severity = (v: Violation) =>
      /crash|not alive|restart/.test(v.rule) ? 0 : /^5xx|status-(INTERNAL|UNKNOWN|DATA_LOSS)|log line/.test(v.rule) ? 1 : /stored|changed|accepted/.test(v.rule) ? 2 : /hang|no-answer/.test(v.rule) ? 3 : 4;
    const sorted = [...groups.entries()].sort((a, b) => severity(a[1].v) - severity(b[1].v) || b[1].count - a[1].count);
    const lines = [`${title}: ${this.all.length} violation(s) in ${groups.size} group(s)`];
    const room = Math.max(1, Math.floor((maxLines - 2) / 2));
    const top = (m: Map<string, number>, n: number) =>
      [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, c]) => `${clip(k, 60)}${c > 1 ? `×${c}` : ''}`).join(', ') + (m.size > n ? `, +${m.size - n}` : '');
    for (const [key, g] of sorted.slice(0, room)) {
      lines.push(`  ${g.count}× ${key} — ${top(g.routes, 3)} [${top(g.classes, 4)}]`);
      lines.push(`      e.g. ${clip(g.v.request, 150)} → ${clip(g.v.answer, 110)}`);
    }
    if (sorted.length > room) lines.push(`  … ${sorted.length - room} more group(s) in the JSON report`);
    return lines.join('\n');
  }

  /** Writes every violation as JSON (for the findings write-up). */
  writeJson(file: string, extra: Record<string, unknown>): void {
    writeFileSync(file, JSON.stringify({ ...extra, violations: this.all }, null, 1));
  }
}
