/** Writes docs/evaluation.md from the evaluation's results files (see main.ts): one section per dataset and variant. */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CLASS_NAMES } from './fashion-mnist.js';
import { groupAccuracy, groupRuns, groupsOf, type EvalResults, type GroupInfo, type RunResult, type Similarity } from './results.js';

/** Sections in this order; other run keys follow alphabetically. */
export const RUN_ORDER = ['fashion-mnist', 'mnist', 'fashion-mnist-dup-longtail', 'mnist-dup-longtail'];

const pct = (x: number, digits = 1) => `${(x * 100).toFixed(digits)}`;
const int = (x: number) => Math.round(x).toLocaleString('en');
const fr = (f: number) => `${Math.round(f * 100)}%`;
const signed = (points: number) => `${points >= 0 ? '+' : '−'}${Math.abs(points).toFixed(2)}`;
const keyOf = (r: EvalResults) => r.runKey ?? 'fashion-mnist';
const classNames = (r: EvalResults) => r.dataset?.classNames ?? CLASS_NAMES;
const title = (r: EvalResults) => `${r.dataset?.title ?? 'Fashion-MNIST'}${r.variant ? ', dup-longtail variant' : ''}`;
const anchor = (r: EvalResults) =>
  title(r)
    .toLowerCase()
    .replace(/[^a-z0-9 -]/g, '')
    .replace(/ /g, '-');
const labelOf = (g: GroupInfo) => (g.seeded ? `${g.label} (mean ± sd, ${'{seeds}'} seeds)` : g.label);
/** What the refit's k-means ran on: every training embedding, or the seeded sample it draws from large datasets. */
function fitInput(r: EvalResults): string {
  const sampled = Number(r.refit.sampleItems);
  return Number.isFinite(sampled) && sampled < r.train.n
    ? `a seeded sample of ${int(sampled)} of the ${int(r.train.n)} training embeddings (the refit's default of about 512 per centroid), every item then scored against the centroids`
    : `all ${int(r.train.n)} training embeddings`;
}

/** "3 Dress", or just "3" where the class name is its index (digits). */
const classLabel = (k: number, names: readonly string[]) => (names[k] === String(k) ? String(k) : `${k} ${names[k]}`);
const budgetOf = (r: EvalResults, f: number) => Math.min(r.train.n, Math.round(f * r.train.n));

/** Points below random at or past which a policy fails the issue's bar. */
const BAR = 0.5;

function groupLabel(r: EvalResults, g: GroupInfo): string {
  return labelOf(g).replace('{seeds}', String(r.seeds.length));
}

function accuracyTable(r: EvalResults): string[] {
  const groups = groupsOf(r);
  const lines = [`| policy | ${r.fractions.map(fr).join(' | ')} |`, `|---|${r.fractions.map(() => '---:').join('|')}|`];
  // The best among the selections that filled their budget.
  const full = (a: ReturnType<typeof groupAccuracy>, f: number) => a !== null && Math.round(a.size) === budgetOf(r, f);
  const best = r.fractions.map((f) =>
    Math.max(
      ...groups.map((g) => {
        const a = groupAccuracy(r, g.group, f);
        return a && full(a, f) ? a.mean : -1;
      }),
    ),
  );
  for (const g of groups) {
    const cells = r.fractions.map((f, j) => {
      const a = groupAccuracy(r, g.group, f);
      if (!a) return '–';
      let text = pct(a.mean, 2);
      if (a.runs > 1) text += ` ± ${pct(a.sd, 2)}`;
      if (Math.round(a.size) !== budgetOf(r, f)) text += ` [n = ${int(a.size)}]`;
      return f < 1 && full(a, f) && Math.abs(a.mean - best[j]) < 1e-12 ? `**${text}**` : text;
    });
    lines.push(`| ${groupLabel(r, g)} | ${cells.join(' | ')} |`);
  }
  lines.push(`| *items kept (budget)* | ${r.fractions.map((f) => int(budgetOf(r, f))).join(' | ')} |`);
  return lines;
}

/** Policy mean minus random mean, in accuracy points, per fraction; and the worst over all fractions ≥ 10%. */
function deltas(r: EvalResults, group: string): { perFraction: (number | null)[]; worst: { delta: number; fraction: number } | null } {
  const perFraction = r.fractions.map((f) => {
    const a = groupAccuracy(r, group, f);
    const random = groupAccuracy(r, 'random', f);
    return a && random ? (a.mean - random.mean) * 100 : null;
  });
  // At 100% only dedup policies select something of their own; the others are the one full run.
  const dedup = !!(r.groups ?? []).find((g) => g.group === group)?.dedup;
  let worst: { delta: number; fraction: number } | null = null;
  r.fractions.forEach((f, j) => {
    const delta = perFraction[j];
    if (delta !== null && f >= 0.1 - 1e-9 && (f < 1 || dedup) && (worst === null || delta < worst.delta)) worst = { delta, fraction: f };
  });
  return { perFraction, worst };
}

function deltaCell(delta: number): string {
  const text = signed(delta);
  return delta < -BAR ? `**${text}**` : text;
}

function deltaTable(r: EvalResults): string[] {
  const lines = [`| policy | ${r.fractions.map(fr).join(' | ')} | worst (≥ 10%) |`, `|---|${r.fractions.map(() => '---:').join('|')}|---:|`];
  lines.push(
    `| *random: sd over ${r.seeds.length} seeds* | ${r.fractions.map((f) => {
      const a = groupAccuracy(r, 'random', f);
      return a && a.runs > 1 ? pct(a.sd, 2) : '–';
    }).join(' | ')} | |`,
  );
  for (const g of groupsOf(r).filter((x) => x.group !== 'random')) {
    const { perFraction, worst } = deltas(r, g.group);
    lines.push(
      `| ${groupLabel(r, g)} | ${perFraction.map((x) => (x === null ? '–' : deltaCell(x))).join(' | ')} | ${worst ? `${deltaCell(worst.delta)} (${fr(worst.fraction)})` : '–'} |`,
    );
  }
  return lines;
}

/** Plain statements computed from the table, so they can never disagree with it. */
function findings(r: EvalResults): string[] {
  const out: string[] = [];
  const groups = groupsOf(r);
  const full = groupRuns(r, 'random', 1)[0];
  for (const f of r.fractions.filter((x) => x < 1)) {
    const random = groupAccuracy(r, 'random', f);
    if (!random) continue;
    const ranked = groups
      .map((g) => ({ g, a: groupAccuracy(r, g.group, f) }))
      .filter((x): x is { g: GroupInfo; a: NonNullable<typeof x.a> } => x.a !== null)
      .sort((a, b) => b.a.mean - a.a.mean);
    const vs = groups
      .filter((g) => g.group !== 'random')
      .flatMap((g) => {
        const a = groupAccuracy(r, g.group, f);
        return a ? [`${g.short} ${signed((a.mean - random.mean) * 100)}`] : [];
      });
    const top = ranked[0];
    out.push(
      `- **${fr(f)}**: best ${top.g.short} (${pct(top.a.mean, 2)}%); vs random ${pct(random.mean, 2)}% (seed range ${pct(random.min, 2)}–${pct(random.max, 2)}): ` +
        `${vs.join(', ')} points` +
        (full ? `; ${Math.abs(full.accuracy - top.a.mean) < 5e-5 ? 'level with' : `${pct(Math.abs(full.accuracy - top.a.mean), 2)} points ${full.accuracy > top.a.mean ? 'below' : 'above'}`} training on everything` : '') +
        '.',
    );
  }
  return out;
}

/** The fraction the per-class tables look at: 30% if it was run, else the smallest. */
const focusFraction = (r: EvalResults) => (r.fractions.includes(0.3) ? 0.3 : Math.min(...r.fractions));

function survivalTable(r: EvalResults, fraction: number): string[] {
  const groups = groupsOf(r).filter((g) => groupRuns(r, g.group, fraction).length > 0);
  const names = classNames(r);
  const survival = (g: string, k: number) => {
    const runs = groupRuns(r, g, fraction);
    return runs.reduce((s, x) => s + x.perClass[k] / r.classCounts[k], 0) / Math.max(1, runs.length);
  };
  const lines = [`| class | train items | mean score | ${groups.map((g) => g.short).join(' | ')} |`, `|---|---:|---:|${groups.map(() => '---:').join('|')}|`];
  for (let k = 0; k < names.length; k++) {
    lines.push(`| ${classLabel(k, names)} | ${int(r.classCounts[k])} | ${r.classMeanScore[k].toFixed(3)} | ${groups.map((g) => `${pct(survival(g.group, k))}%`).join(' | ')} |`);
  }
  const stats = (g: string) => {
    const s = names.map((_, k) => survival(g, k));
    const mean = s.reduce((a, b) => a + b, 0) / s.length;
    const cv = Math.sqrt(s.reduce((a, b) => a + (b - mean) ** 2, 0) / s.length) / mean;
    return { ratio: Math.min(...s) > 0 ? Math.max(...s) / Math.min(...s) : Infinity, cv };
  };
  lines.push(`| *max / min survival* | | | ${groups.map((g) => (Number.isFinite(stats(g.group).ratio) ? `${stats(g.group).ratio.toFixed(1)}×` : '∞ (a class at 0%)')).join(' | ')} |`);
  lines.push(`| *coefficient of variation* | | | ${groups.map((g) => stats(g.group).cv.toFixed(2)).join(' | ')} |`);
  if (r.variant) {
    const h = r.variant.headClass;
    const share = (g: string) => {
      const runs = groupRuns(r, g, fraction);
      return runs.reduce((a, x) => a + x.perClass[h] / x.size, 0) / Math.max(1, runs.length);
    };
    lines.push(`| *head class ${h} as a share of the kept items* | ${pct(r.classCounts[h] / r.train.n)}% | | ${groups.map((g) => `${pct(share(g.group))}%`).join(' | ')} |`);
  }
  return lines;
}

/** Test accuracy within each class of the models trained on the `fraction` selections, and on everything. */
function classAccuracyTable(r: EvalResults, fraction: number): string[] {
  const groups = groupsOf(r).filter((g) => groupRuns(r, g.group, fraction).length > 0);
  const names = classNames(r);
  const full = groupRuns(r, 'random', 1)[0];
  const acc = (g: string, k: number) => {
    const runs = groupRuns(r, g, fraction).filter((x) => x.perClassAccuracy);
    return runs.length ? runs.reduce((s, x) => s + x.perClassAccuracy[k], 0) / runs.length : Number.NaN;
  };
  const lines = [`| class | ${groups.map((g) => g.short).join(' | ')} | all data |`, `|---|${groups.map(() => '---:').join('|')}|---:|`];
  for (let k = 0; k < names.length; k++) {
    lines.push(`| ${classLabel(k, names)} | ${groups.map((g) => `${pct(acc(g.group, k))}%`).join(' | ')} | ${full?.perClassAccuracy ? `${pct(full.perClassAccuracy[k])}%` : '–'} |`);
  }
  return lines;
}

function plantedTables(r: EvalResults): string[] {
  const v = r.variant!;
  const groups = groupsOf(r);
  const mean = (runs: RunResult[], pick: (x: RunResult) => number) => runs.reduce((s, x) => s + pick(x), 0) / Math.max(1, runs.length);
  const table = (pick: (x: RunResult) => number) => {
    const lines = [`| policy | ${r.fractions.map(fr).join(' | ')} |`, `|---|${r.fractions.map(() => '---:').join('|')}|`];
    for (const g of groups) {
      lines.push(
        `| ${g.short} | ${r.fractions
          .map((f) => {
            const runs = groupRuns(r, g.group, f).filter((x) => x.planted);
            return runs.length ? `${pct(mean(runs, pick))}%` : '–';
          })
          .join(' | ')} |`,
      );
    }
    return lines;
  };
  return [
    `Planted copies among the kept items (% of the kept items; the training set is ${pct(v.copies / v.n)}% copies, so a random subset keeps about that share):`,
    '',
    ...table((x) => x.planted!.kept / x.size),
    '',
    `Planted pairs (an original and its copy) with both members kept (% of the ${int(v.copies)} pairs; a random subset of fraction f keeps about f² of them):`,
    '',
    ...table((x) => x.planted!.pairsBothKept / v.copies),
  ];
}

const simCells = (s: Similarity) => `${s.n} | ${s.min.toFixed(4)} | ${s.p10.toFixed(4)} | ${s.median.toFixed(4)} | ${s.p90.toFixed(4)} | ${s.max.toFixed(4)}`;

function similarityTable(r: EvalResults): string[] {
  const v = r.variant!;
  return [
    `Cosine similarity of each planted copy's embedding to its source's (${v.identicalCopies} of ${int(v.copies)} copies have an embedding identical to their source's), and, for reference, of ${v.nearestOriginal.n} seeded-sampled originals to their most similar other original:`,
    '',
    '| pairs | n | min | p10 | median | p90 | max |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...Object.entries(v.copySimilarity).map(([k, s]) => `| copy vs source: ${k === 'all' ? 'all copies' : k} | ${simCells(s)} |`),
    `| original vs nearest other original | ${simCells(v.nearestOriginal)} |`,
    '',
    'SemDeDup counts an item as a duplicate when its similarity to a kept item of its cluster is at least 1 − ε (the service\'s default ε is 0.05).',
  ];
}

function sweepTable(r: EvalResults): string[] {
  const sweep = r.dedupSweep ?? (r.dedup ? [r.dedup] : []);
  if (sweep.length === 0) return [];
  const v = r.variant;
  const rows = [...sweep].sort((a, b) => (a.epsilon ?? 0) - (b.epsilon ?? 0));
  const lines = [
    `SemDeDup of the training set (\`POST …/duplicates/jobs\`, the service's own runs) at ${rows.length === 1 ? 'one ε' : 'several ε'}; the dedup policies used ε = ${r.dedup?.epsilon ?? 'the dataset default'}:`,
    '',
    `| ε | groups | items marked duplicate | ${v ? 'of them planted copies | of them originals | planted pairs in one group | ' : ''}seconds |`,
    `|---:|---:|---:|${v ? '---:|---:|---:|' : ''}---:|`,
  ];
  for (const d of rows) {
    lines.push(
      `| ${d.epsilon ?? 'default'} | ${int(d.groups)} | ${int(d.removed)} (${pct(d.removed / r.train.n)}%) | ` +
        (v ? `${int(d.removedCopies ?? 0)} (${pct((d.removedCopies ?? 0) / v.copies)}% of the copies) | ${int(d.removedOriginals ?? 0)} (${pct((d.removedOriginals ?? 0) / v.originals)}% of the originals) | ${int(d.pairsInOneGroup ?? 0)} (${pct((d.pairsInOneGroup ?? 0) / v.copies)}%) | ` : '') +
        `${d.seconds.toFixed(1)} |`,
    );
  }
  lines.push('', 'A group is one kept item and the items marked as its near-duplicates (cosine similarity ≥ 1 − ε, within a cluster). A planted pair "in one group" is an original and its copy that SemDeDup put together.');
  return lines;
}

function variantSetup(r: EvalResults): string[] {
  const v = r.variant!;
  const names = classNames(r);
  const kinds = Object.entries(v.transforms)
    .map(([k, count]) => `${count} ${k === 'shift' ? `shifts by up to ${v.maxShift} px` : k === 'hflip' ? 'horizontal flips' : `Gaussian noise (σ = ${v.noiseSigma} grey levels)`}`)
    .join(', ');
  const lines = [
    `- **Variant \`dup-longtail\`** (seed ${v.seed}; built by \`bench/eval/variant.ts\` from the plain training set): class ${v.headClass} (${names[v.headClass]}) keeps ${int(v.head)} images and every other class ${int(v.tail)} ` +
      `(a ${v.ratio}× long tail, the other classes subsampled with a seeded shuffle); then ${int(v.copies)} planted near-duplicates — ${pct(v.copies / v.n)}% of the final ${int(v.n)} training items — ` +
      `one augmented copy of distinct originals of each class, in proportion to the class sizes: ${kinds}. ` +
      'Each copy is its source\'s decoded pixels under the transform, re-encoded as PNG and embedded by the service like every other image. Originals and copies are interleaved in a seeded order. The test set is the plain one, untouched. ' +
      `Budgets below are fractions of the ${int(v.n)} variant training items.`,
  ];
  return lines;
}

function dedupLine(r: EvalResults): string | null {
  const dd = r.dedup;
  if (!dd) return null;
  let text =
    `- **SemDeDup** (\`POST …/duplicates/jobs\`${dd.epsilon === null ? ' at the dataset\'s default ε' : ` with ε = ${dd.epsilon}`}, ${dd.seconds.toFixed(1)} s): ` +
    `${int(dd.groups)} groups, ${int(dd.removed)} items marked as duplicates (${pct(dd.removed / r.train.n)}% of the training set)`;
  if (r.variant && dd.removedCopies !== undefined) {
    text += `; of those, ${int(dd.removedCopies)} are planted copies and ${int(dd.removedOriginals!)} originals; ${int(dd.pairsInOneGroup!)} of the ${int(r.variant.copies)} planted pairs fell in one group`;
  }
  return `${text}.`;
}

function paramsText(params: Record<string, unknown>): string {
  return Object.entries(params)
    .filter(([k]) => k !== 'seed')
    .map(([k, v]) => `${k}=${String(v)}`)
    .join('&');
}

function selectionsLine(r: EvalResults): string {
  const seen = new Set<string>();
  const parts: string[] = [];
  for (const p of r.policies) {
    if (seen.has(p.group)) continue;
    seen.add(p.group);
    const seeded = r.policies.filter((x) => x.group === p.group).length > 1 || 'seed' in p.params;
    if (!r.runs.some((x) => x.group === p.group)) continue;
    parts.push(`\`${paramsText(p.params)}${seeded ? `&seed=${r.seeds.join('|')}` : ''}\``);
  }
  const autoNote = (['auto', 'dedup-auto'] as const).map((key) => autoChoices(r, key)).filter(Boolean).join('');
  return (
    `- **Selections**: \`GET /v1/datasets/${r.dataset?.serviceDataset ?? 'fmnist-train'}/selection\` (NDJSON) with ${r.selectionMeta ? '`count` = round(fraction × training items) and ' : ''}${parts.join(', ')}, for each kept fraction` +
    ' (stratified is CCS with its defaults: β = 10% hardest set aside, 50 bins).' +
    autoNote
  );
}

/**
 * What order=auto ran at each fraction (X-Selection-Policy) and the imbalance it reported: the survival rates' coefficient of
 * variation over clusters beside the one random sampling of that size would be expected to show (X-Selection-Imbalance).
 */
function autoChoices(r: EvalResults, key: 'auto' | 'dedup-auto'): string {
  const rows = Object.entries(r.selectionMeta ?? {})
    .filter(([k]) => k.split('@')[0] === key)
    .map(([k, m]) => ({ fraction: Number(k.split('@')[1]), policy: m.headers['x-selection-policy'], imbalance: m.headers['x-selection-imbalance'] }))
    .sort((a, b) => a.fraction - b.fraction);
  if (!rows.length) return '';
  const byPolicy = new Map<string, number[]>();
  for (const row of rows) byPolicy.set(row.policy ?? '?', [...(byPolicy.get(row.policy ?? '?') ?? []), row.fraction]);
  const cv = rows
    .map((row) => {
      if (!row.imbalance) return undefined;
      const report = JSON.parse(row.imbalance) as { survivalCv: number; randomSurvivalCv: number };
      return `${fr(row.fraction)} ${report.survivalCv.toFixed(2)} / ${report.randomSurvivalCv.toFixed(2)}`;
    })
    .filter(Boolean);
  const label = key === 'auto' ? '`order=auto`' : '`order=auto&dedup=true`';
  return (
    ` ${label} ran ${[...byPolicy].map(([policy, fractions]) => `\`${policy}\` at ${fractions.map(fr).join(', ')}`).join('; ')}` +
    (cv.length ? ` (survival CV over clusters / random's expected CV, from \`X-Selection-Imbalance\`: ${cv.join(', ')}).` : '.')
  );
}

/** The message of a JSON error body (or the text itself), on one line. */
function errorText(body: string): string {
  let text = body;
  try {
    const parsed = JSON.parse(body) as { error?: { code?: string; message?: string } };
    if (parsed.error?.message) text = `${parsed.error.code ? `${parsed.error.code}: ` : ''}${parsed.error.message}`;
  } catch {
    /* not JSON */
  }
  return text.replace(/\s+/g, ' ').replace(/\|/g, '\\|').slice(0, 240);
}

function skippedLines(r: EvalResults): string[] {
  if (!r.skipped?.length) return [];
  return [
    '',
    'Policies asked for but not evaluated (or only partly) because the server refused them or ignored their parameters:',
    '',
    ...r.skipped.map((s) => `- \`${s.group}\`${s.fractions ? ` (at ${s.fractions.map(fr).join(', ')})` : ''}: ${s.status ? `HTTP ${s.status}` : 'error'} — ${errorText(s.message)}`),
  ];
}

function imagesLine(r: EvalResults): string {
  const part = (what: string, n: number, x: EvalResults['train']['imagesIngest']) =>
    x
      ? `${what} ${int(n)} images in ${x.seconds.toFixed(0)} s (${(n / x.seconds).toFixed(1)} images/s${x.loadAverage ? `, load average ${x.loadAverage.map((l) => l.toFixed(1)).join(' / ')} when it finished` : ''})`
      : `${what}: not recorded`;
  const trainN = r.timings?.trainImages.n ?? r.train.n;
  let text = `Embedding the images through the service (${r.train.source === 'cache' ? 'when the cache was built' : 'this run'}): ${part('training', trainN, r.train.imagesIngest)}; ${part('test', r.test.n, r.test.imagesIngest)}`;
  const copies = r.timings?.copyImages;
  if (copies) text += `; planted copies ${int(copies.n)} images ${copies.imagesSeconds !== null ? `in ${copies.imagesSeconds.toFixed(0)} s` : '(time not recorded)'}${copies.source === 'cache' ? ' (from the cache this run)' : ''}`;
  return `${text}.`;
}

function runsTable(r: EvalResults): string[] {
  const lines = ['| policy | kept | items | test acc. | L-BFGS iterations | loss evaluations | stopped by | max abs(grad) | seconds |', '|---|---:|---:|---:|---:|---:|---|---:|---:|'];
  for (const run of r.runs) {
    const label = r.policies.find((p) => p.key === run.policy)?.label ?? run.policy;
    const all = run.size === r.train.n && run.fraction >= 1;
    lines.push(
      `| ${all ? 'all (100%)' : label} | ${fr(run.fraction)} | ${int(run.size)} | ${pct(run.accuracy, 2)}% | ${run.iterations} | ${run.evaluations} | ${run.reason} | ${run.gradMax.toExponential(1)} | ${run.seconds.toFixed(1)}${run.cached ? ' (cached)' : ''} |`,
    );
  }
  return lines;
}

function timingsTable(r: EvalResults): string[] {
  const t = r.timings;
  if (!t) return ['(not recorded for this run)'];
  const rate = (n: number, s: number | null) => (s ? `${(n / s).toFixed(1)}/s` : '');
  const images = (what: string, x: NonNullable<typeof t.copyImages>) =>
    `| ${what} | ${int(x.n)} | ${x.imagesSeconds !== null ? x.imagesSeconds.toFixed(0) : '–'} | ${rate(x.n, x.imagesSeconds)} | ${x.source === 'cache' ? `from the cache this run (${x.seconds.toFixed(1)} s)` : 'this run'}${x.loadAverage ? `; load ${x.loadAverage.map((l) => l.toFixed(1)).join(' / ')}` : ''} |`;
  const lines = ['| phase | items | seconds | rate | note |', '|---|---:|---:|---:|---|'];
  lines.push(images('embed training images (PNG → service encoder)', t.trainImages));
  lines.push(images('embed test images', t.testImages));
  if (t.copyImages) lines.push(images('embed planted copies', t.copyImages));
  lines.push(`| ingest the training vectors in index order | ${int(r.train.n)} | ${t.fillSeconds.toFixed(1)} | ${rate(r.train.n, t.fillSeconds)} | |`);
  const server = (r.refit.timings ?? {}) as Record<string, number>;
  lines.push(`| full refit (k = ${r.prototypes.k}) | ${int(r.train.n)} | ${t.refitSeconds.toFixed(1)} | | server: fit ${((server.fitMs ?? 0) / 1000).toFixed(1)} s, total ${((server.totalMs ?? 0) / 1000).toFixed(1)} s |`);
  const sweep = r.dedupSweep ?? (r.dedup ? [r.dedup] : []);
  for (const d of sweep) lines.push(`| SemDeDup job, ε = ${d.epsilon ?? 'default'} | ${int(r.train.n)} | ${d.seconds.toFixed(1)} | | ${d === sweep[sweep.length - 1] ? 'used by the dedup policies' : ''} |`);
  for (const g of groupsOf(r)) {
    const s = t.selections[g.group];
    const tr = t.training[g.group];
    if (s) lines.push(`| selections: ${g.short} | ${s.requests} requests | ${s.seconds.toFixed(1)} | | |`);
    if (tr) lines.push(`| training: ${g.short} | ${tr.fits} fits | ${tr.seconds.toFixed(1)} | | ${tr.cached ? `${tr.cached} from the run cache (seconds as first measured)` : ''} |`);
  }
  const fits = Object.values(t.training).reduce((a, x) => a + x.seconds, 0);
  lines.push(`| *all training* | ${Object.values(t.training).reduce((a, x) => a + x.fits, 0)} fits | ${fits.toFixed(0)} | | |`);
  lines.push(`| *wall time of this run* | | ${r.wallSeconds.toFixed(0)} | | |`);
  return lines;
}

function section(r: EvalResults, svg: string, extra: string): string[] {
  const converged = r.runs.filter((x) => x.converged).length;
  const timings = (r.refit.timings ?? {}) as Record<string, number>;
  const sizes = [...r.prototypes.clusterSizes].sort((a, b) => a - b);
  const focus = focusFraction(r);
  const counts = r.classCounts;
  const description =
    r.dataset?.description ??
    `Fashion-MNIST from the Debian package \`dataset-fashion-mnist\`: ${int(r.train.n)} training and ${int(r.test.n)} test images, 28×28 grey, 10 classes.`;
  const lines = [
    `## ${title(r)}`,
    '',
    `Run \`${keyOf(r)}\`, generated ${r.createdAt.slice(0, 16).replace('T', ' ')} UTC on this machine (${r.machine.cores} cores, ${r.machine.cpu}, ${r.machine.memGiB} GiB; ` +
      `load average ${r.machine.loadBefore.map((l) => l.toFixed(1)).join(' / ')} at the start and ${r.machine.loadAfter.map((l) => l.toFixed(1)).join(' / ')} at the end — ` +
      `other work may have been running, which affects only the timings, not the accuracies). Wall time ${(r.wallSeconds / 60).toFixed(1)} min.`,
    '',
    '### Setup',
    '',
    `- **Data**: ${description}${r.variant ? '' : ` Training items per class: ${Math.min(...counts) === Math.max(...counts) ? int(counts[0]) : `${int(Math.min(...counts))}–${int(Math.max(...counts))}`}.`}`,
  ];
  if (r.variant) lines.push(...variantSetup(r));
  lines.push(
    `- **Embeddings**: every image was sent as a PNG to the running service (\`POST /v1/datasets/{d}/items\`, JSON with base64 images, 250 per request, 4 requests in flight) and embedded by the default encoder ` +
      `\`${r.model.name}\` (ImageNet MobileNetV2-1.4, sha256 \`${r.model.sha256.slice(0, 16)}…\`), ${r.train.dim}-d, L2-normalised by the service. ` +
      `The images are upscaled by the service's preprocessing (shorter side 256, centre crop 224, grey expanded to RGB). ` +
      `The stored vectors are read back from the service's database and cached under \`bench/.cache/\` keyed by the model's SHA-256${r.variant ? ' (the planted copies by their transforms and the variant seed)' : ''}; ` +
      'the training dataset is then filled with the vectors in index order, so the seeded refit sees the same input whether they came from images or the cache. ' +
      imagesLine(r),
    `- **Service**: started in-process with \`startService\` (${r.backend === 'native' ? 'native PostgreSQL + pgvector' : 'embedded PGlite'}), API keys on (the harness mints an admin key with \`mintApiKey\` and revokes it at the end). ` +
      'Test images go to a second dataset so they take exactly the same encoder path; they are never used for clustering.',
    `- **Prototypes**: one full refit of \`${r.dataset?.serviceDataset ?? 'fmnist-train'}\` (\`POST …/prototypes/refit\`, followed on \`GET /v1/jobs/{id}\`) with **k = ${r.prototypes.k}** ` +
      `(spherical k-means, seed 0, on ${fitInput(r)}; fit ${((timings.fitMs ?? 0) / 1000).toFixed(1)} s, refit total ${((timings.totalMs ?? 0) / 1000).toFixed(1)} s). ` +
      `Cluster sizes ${sizes[0]}–${sizes[sizes.length - 1]} (median ${sizes[sizes.length >> 1]}). ` +
      `Cluster purity (share of items whose cluster's majority label is their own): ${pct(r.clusterPurity)}%.`,
  );
  const dd = dedupLine(r);
  if (dd) lines.push(dd);
  lines.push(
    selectionsLine(r),
    `- **Classifier**: multinomial logistic regression (softmax, L2 λ = ${r.lambda} on the weights with the mean cross-entropy, bias unregularised) on the ${r.train.dim}-d embeddings, ` +
      'standardised per feature with the mean and standard deviation of the selected subset; full-batch L-BFGS (memory 10, Armijo backtracking) ' +
      `until max |∇| ≤ ${r.gtol} or a relative decrease of the objective below ${r.ftol} in one iteration, at most ${r.maxIterations} iterations (\`bench/eval/logreg.ts\`). ` +
      `${converged} of ${r.runs.length} fits met a stopping criterion before the iteration cap. Evaluated on the ${int(r.test.n)} test images.`,
    ...skippedLines(r),
    '',
    '### Test accuracy (%)',
    '',
    ...accuracyTable(r),
    '',
    `Bold: the best policy at that fraction among the selections that filled the budget. Seeded policies: mean ± sample standard deviation over the seeds ${r.seeds.join(', ')}; the others are one deterministic selection each. ` +
      'At 100% every policy without dedup keeps the whole training set, so one model stands for all of them. ' +
      '`[n = …]`: the selection held fewer items than the budget. ' +
      (r.fractions.includes(0.9) ? 'At 90%, stratified (CCS) keeps exactly the easiest 90%: it sets the hardest β = 10% aside first.' : ''),
    '',
    '### Difference to random (accuracy points)',
    '',
    ...deltaTable(r),
    '',
    `Each policy's accuracy (mean over seeds if seeded) minus random's mean at the same budget, in points; **bold**: more than ${BAR} points below random. ` +
      '"worst": the lowest difference over the kept fractions ≥ 10% (100% counts only for dedup policies, the only ones that select something of their own there) and where it occurs. The first row is random\'s own spread over its seeds.',
    '',
    `![Test accuracy vs kept fraction per policy, ${title(r)}](${svg})`,
    '',
    '### What the numbers say',
    '',
    ...findings(r),
    '',
  );
  if (r.variant) lines.push('### Planted near-duplicates', '', ...similarityTable(r), '', ...plantedTables(r), '');
  const sweep = sweepTable(r);
  if (sweep.length) lines.push(r.variant ? '#### SemDeDup on this training set' : '### SemDeDup on this training set', '', ...sweep, '');
  lines.push(
    `### Per-class survival of the ${fr(focus)} selections`,
    '',
    `Share of each class kept by each policy at ${fr(focus)} (seeded policies: mean over the seeds). "mean score" is the class's mean prototype score (cosine distance to the nearest centroid). ` +
      `A policy that keeps class proportions keeps about ${fr(focus)} of every class. "coefficient of variation": standard deviation over mean of the ten survival rates.`,
    '',
    ...survivalTable(r, focus),
    '',
    `Test accuracy within each class (recall on the ${r.testClassCounts ? `${int(Math.min(...r.testClassCounts))}–${int(Math.max(...r.testClassCounts))}` : int(r.test.n / classNames(r).length)} test images of the class) of the models trained on those ${fr(focus)} selections (seeded policies: mean over the seeds), and of the model trained on all data:`,
    '',
    ...classAccuracyTable(r, focus),
    '',
  );
  if (extra) lines.push(extra, '');
  return lines;
}

/** Worst difference to random per policy and run: the issue's "never more than 0.5 points below random" read off in one place. */
function summaryTable(all: EvalResults[]): string[] {
  const groups: GroupInfo[] = [];
  for (const r of all) for (const g of groupsOf(r)) if (g.group !== 'random' && !groups.some((x) => x.group === g.group)) groups.push(g);
  const lines = [`| policy | ${all.map((r) => `[${title(r)}](#${anchor(r)})`).join(' | ')} |`, `|---|${all.map(() => '---:').join('|')}|`];
  for (const g of groups) {
    lines.push(
      `| ${g.label} | ${all
        .map((r) => {
          const { worst } = deltas(r, g.group);
          return worst ? `${deltaCell(worst.delta)} (${fr(worst.fraction)})` : '–';
        })
        .join(' | ')} |`,
    );
  }
  lines.push(`| *training items (100%)* | ${all.map((r) => int(r.train.n)).join(' | ')} |`);
  return lines;
}

function reproduce(all: EvalResults[]): string[] {
  const installs = [...new Set(all.map((r) => r.dataset?.install ?? 'sudo apt-get install dataset-fashion-mnist'))];
  const runs = all.map((r) => {
    const args = [r.dataset && r.dataset.key !== 'fashion-mnist' ? `--dataset=${r.dataset.key}` : '', r.variant ? '--variant=dup-longtail' : ''].filter(Boolean).join(' ');
    const command = r.command ?? `npm run eval${args ? ` -- ${args}` : ''}`;
    return `EVAL_DATABASE_URL='postgres://…/protoprune?schema=bench_eval' ${command.replace(/ --$/, '')}`;
  });
  return [
    '## Reproduce',
    '',
    '```sh',
    ...installs,
    'sudo bash scripts/install-postgres.sh               # native PostgreSQL + pgvector; prints the URL',
    ...runs,
    '```',
    '',
    'Flags (after `npm run eval --`): `--dataset=fashion-mnist|mnist`, `--variant=none|dup-longtail` (with `--variant-seed=1`, `--head-class=N`, `--tail-ratio=10`, `--dup-share=0.2`, `--noise-sigma=4`, `--max-shift=1`), ' +
      '`--policies=hardest,easiest,random,stratified,hardest-cluster,auto,hierarchical,dedup-random,dedup-auto` (the default is all of them; see `bench/eval/policies.ts`; a policy the server refuses is skipped and listed), ' +
      '`--epsilon=ε` and `--dedup-keep=closest|farthest|random` for the dedup policies (default: the server\'s), `--dedup-sweep=0.01,0.02,0.05` (further SemDeDup runs, reported in the SemDeDup table; run whenever a dedup policy is asked for), ' +
      '`--k=100`, `--fractions=10,20,30,50,70,90,100`, `--seeds=1,2,3`, `--lambda=0.0005`, `--max-iter=2000`, `--gtol=0.00001`, ' +
      '`--limit=N` / `--test-limit=N` (quick runs on the first N images; the image caches are only written by full runs), `--no-cache`, `--embed-only`, `--render` (rewrite this file and the plots from the results files only). ' +
      'Each run writes its own results file (`evaluation-results.json` for Fashion-MNIST, `evaluation-results-<run>.json` for the others) and plot, and rewrites this file from all results files present. ' +
      'Reruns reuse `bench/.cache/`: the embeddings, and every classifier fit whose selection, settings and model are unchanged, so adding policies only computes the new rows.',
    '',
  ];
}

export async function renderAll(all: EvalResults[], file: string, evalDir: string, svgName: (r: EvalResults) => string): Promise<void> {
  const read = async (name: string) => {
    const f = path.join(evalDir, name);
    return existsSync(f) ? (await readFile(f, 'utf8')).trim() : '';
  };
  const lines = [
    '# Evaluation: does pruning by prototype scores keep accuracy?',
    '',
    '<!-- Generated by `npm run eval` (bench/eval/main.ts) from docs/evaluation-results*.json; edit bench/eval/report.ts or bench/eval/discussion*.md, not this file. -->',
    '',
    `Runs in this file: ${all.map((r) => `[${title(r)}](#${anchor(r)}) (${int(r.train.n)} training items, ${r.createdAt.slice(0, 10)})`).join(', ')}.`,
    '',
    '## Summary: worst difference to random',
    '',
    ...summaryTable(all),
    '',
    `For each policy and run, the lowest value over the kept fractions ≥ 10% of (policy accuracy − random accuracy), in points, and the fraction where it occurs (100% counts only for dedup policies; every other policy keeps the whole set there); random and other seeded policies are the mean over their seeds. ` +
      `**Bold**: more than ${BAR} points below random somewhere. "–": not run on that data (or refused by the server).`,
    '',
  ];
  for (const r of all) {
    lines.push(...section(r, svgName(r), await read(`discussion-${keyOf(r)}.md`)));
    if (keyOf(r) === 'fashion-mnist') {
      const discussion = await read('discussion.md');
      if (discussion) lines.push(discussion, '');
    }
  }
  lines.push('## Timings', '');
  for (const r of all) lines.push(`### ${title(r)}`, '', ...timingsTable(r), '');
  lines.push(
    'Embedding times are those of the run that built the cache (their load averages show how busy the two cores were then). Training seconds are the L-BFGS fits; fits taken from the run cache count with the time first measured.',
    '',
    '## Every training run',
    '',
  );
  for (const r of all) lines.push(`<details><summary>${title(r)}: L-BFGS iterations, stopping reason and time of each fit</summary>`, '', ...runsTable(r), '', '</details>', '');
  lines.push(...reproduce(all));
  await writeFile(file, lines.join('\n'));
}
