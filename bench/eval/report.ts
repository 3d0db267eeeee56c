/** Writes docs/evaluation.md from the evaluation's results (see main.ts). */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { CLASS_NAMES } from './fashion-mnist.js';
import { GROUPS, groupAccuracy, type EvalResults } from './results.js';

const pct = (x: number, digits = 1) => `${(x * 100).toFixed(digits)}`;

function accuracyTable(r: EvalResults): string[] {
  const lines = [
    `| policy | ${r.fractions.map((f) => `${Math.round(f * 100)}%`).join(' | ')} |`,
    `|---|${r.fractions.map(() => '---:').join('|')}|`,
  ];
  const best = r.fractions.map((f) => Math.max(...GROUPS.map((g) => groupAccuracy(r, g.group, f)?.mean ?? -1)));
  for (const g of GROUPS) {
    const cells = r.fractions.map((f, j) => {
      const a = groupAccuracy(r, g.group, f);
      if (!a) return '–';
      let text = pct(a.mean, 2);
      if (a.runs > 1) text += ` ± ${pct(Math.sqrt(sampleVariance(r.runs.filter((x) => x.fraction === f && x.group === g.group).map((x) => x.accuracy))), 2)}`;
      return f < 1 && Math.abs(a.mean - best[j]) < 1e-12 ? `**${text}**` : text;
    });
    lines.push(`| ${g.label.replace(' (mean, min–max)', ` (mean ± sd, ${r.seeds.length} seeds)`)} | ${cells.join(' | ')} |`);
  }
  const sizes = r.fractions.map((f) => r.runs.find((x) => x.fraction === f)?.size ?? 0);
  lines.push(`| *items kept* | ${sizes.map((s) => s.toLocaleString('en')).join(' | ')} |`);
  return lines;
}

function sampleVariance(xs: number[]): number {
  if (xs.length < 2) return 0;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1);
}

/** Plain statements computed from the table, so they can never disagree with it. */
function findings(r: EvalResults): string[] {
  const out: string[] = [];
  const full = groupAccuracy(r, 'hardest', 1);
  for (const f of r.fractions.filter((x) => x < 1)) {
    const random = groupAccuracy(r, 'random', f)!;
    const ranked = GROUPS.map((g) => ({ g, a: groupAccuracy(r, g.group, f)! })).sort((a, b) => b.a.mean - a.a.mean);
    const vs = (group: string) => {
      const a = groupAccuracy(r, group, f)!;
      const delta = (a.mean - random.mean) * 100;
      return `${delta >= 0 ? '+' : ''}${delta.toFixed(2)}`;
    };
    out.push(
      `- **${Math.round(f * 100)}%**: best ${ranked[0].g.short} (${pct(ranked[0].a.mean, 2)}%); vs random ${pct(random.mean, 2)}% (seed range ${pct(random.min, 2)}–${pct(random.max, 2)}): ` +
        `hardest ${vs('hardest')}, easiest ${vs('easiest')}, stratified ${vs('stratified')}, hardest+balance ${vs('hardest-cluster')} points` +
        (full ? `; ${Math.abs(full.mean - ranked[0].a.mean) < 5e-5 ? 'level with' : `${pct(Math.abs(full.mean - ranked[0].a.mean), 2)} points ${full.mean > ranked[0].a.mean ? 'below' : 'above'}`} training on everything` : '') +
        '.',
    );
  }
  return out;
}

function survivalTable(r: EvalResults, fraction: number): string[] {
  const groups = ['hardest', 'easiest', 'random', 'stratified', 'hardest-cluster'];
  const label = (g: string) => GROUPS.find((x) => x.group === g)!.short;
  const runsOf = (g: string) => r.runs.filter((x) => x.fraction === fraction && x.group === g);
  const survival = (g: string, k: number) => {
    const runs = runsOf(g);
    return runs.reduce((s, x) => s + x.perClass[k] / r.classCounts[k], 0) / Math.max(1, runs.length);
  };
  const lines = [
    `| class | train items | mean score | ${groups.map(label).join(' | ')} |`,
    `|---|---:|---:|${groups.map(() => '---:').join('|')}|`,
  ];
  for (let k = 0; k < CLASS_NAMES.length; k++) {
    lines.push(
      `| ${k} ${CLASS_NAMES[k]} | ${r.classCounts[k].toLocaleString('en')} | ${r.classMeanScore[k].toFixed(3)} | ${groups.map((g) => `${pct(survival(g, k))}%`).join(' | ')} |`,
    );
  }
  const spread = (g: string) => {
    const s = CLASS_NAMES.map((_, k) => survival(g, k));
    const max = Math.max(...s);
    const min = Math.min(...s);
    return `${(max / Math.max(min, 1e-9)).toFixed(1)}×`;
  };
  const cv = (g: string) => {
    const s = CLASS_NAMES.map((_, k) => survival(g, k));
    const mean = s.reduce((a, b) => a + b, 0) / s.length;
    return Math.sqrt(s.reduce((a, b) => a + (b - mean) ** 2, 0) / s.length) / mean;
  };
  lines.push(`| *max / min survival* | | | ${groups.map(spread).join(' | ')} |`);
  lines.push(`| *coefficient of variation* | | | ${groups.map((g) => cv(g).toFixed(2)).join(' | ')} |`);
  return lines;
}

/** Test accuracy within each class of the models trained on the `fraction` selections, and on everything. */
function classAccuracyTable(r: EvalResults, fraction: number): string[] {
  const groups = ['hardest', 'easiest', 'random', 'stratified', 'hardest-cluster'];
  const label = (g: string) => GROUPS.find((x) => x.group === g)!.short;
  const full = r.runs.find((x) => x.fraction >= 1);
  const acc = (g: string, k: number) => {
    const runs = r.runs.filter((x) => x.fraction === fraction && x.group === g && x.perClassAccuracy);
    return runs.length ? runs.reduce((s, x) => s + x.perClassAccuracy[k], 0) / runs.length : Number.NaN;
  };
  const lines = [
    `| class | ${groups.map(label).join(' | ')} | all data |`,
    `|---|${groups.map(() => '---:').join('|')}|---:|`,
  ];
  for (let k = 0; k < CLASS_NAMES.length; k++) {
    lines.push(`| ${k} ${CLASS_NAMES[k]} | ${groups.map((g) => `${pct(acc(g, k))}%`).join(' | ')} | ${full?.perClassAccuracy ? `${pct(full.perClassAccuracy[k])}%` : '–'} |`);
  }
  return lines;
}

function runsTable(r: EvalResults): string[] {
  const lines = ['| policy | kept | items | test acc. | L-BFGS iterations | loss evaluations | stopped by | max abs(grad) | seconds |', '|---|---:|---:|---:|---:|---:|---|---:|---:|'];
  for (const run of r.runs) {
    const label = r.policies.find((p) => p.key === run.policy)?.label ?? run.policy;
    lines.push(
      `| ${run.fraction >= 1 ? 'all (100%)' : label} | ${Math.round(run.fraction * 100)}% | ${run.size.toLocaleString('en')} | ${pct(run.accuracy, 2)}% | ${run.iterations} | ${run.evaluations} | ${run.reason} | ${run.gradMax.toExponential(1)} | ${run.seconds.toFixed(1)} |`,
    );
  }
  return lines;
}

function imagesLine(r: EvalResults): string {
  const part = (what: string, n: number, x: EvalResults['train']['imagesIngest']) =>
    x
      ? `${what} ${n.toLocaleString('en')} images in ${x.seconds.toFixed(0)} s (${(n / x.seconds).toFixed(1)} images/s${x.loadAverage ? `, load average ${x.loadAverage.map((l) => l.toFixed(1)).join(' / ')} when it finished` : ''})`
      : `${what}: not recorded`;
  return `Embedding the images through the service (${r.train.source === 'cache' ? 'when the cache was built' : 'this run'}): ${part('training', r.train.n, r.train.imagesIngest)}; ${part('test', r.test.n, r.test.imagesIngest)}.`;
}

export async function writeReport(r: EvalResults, file: string, discussionFile: string): Promise<void> {
  const converged = r.runs.filter((x) => x.converged).length;
  const timings = (r.refit.timings ?? {}) as Record<string, number>;
  const sizes = [...r.prototypes.clusterSizes].sort((a, b) => a - b);
  const discussion = existsSync(discussionFile) ? (await readFile(discussionFile, 'utf8')).trim() : '';
  const lines = [
    '# Evaluation: does pruning by prototype scores keep accuracy?',
    '',
    '<!-- Generated by `npm run eval` (bench/eval/main.ts); edit bench/eval/report.ts or bench/eval/discussion.md, not this file. -->',
    '',
    `Generated ${r.createdAt.slice(0, 16).replace('T', ' ')} UTC by \`npm run eval\` on this machine (${r.machine.cores} cores, ${r.machine.cpu}, ${r.machine.memGiB} GiB; ` +
      `load average ${r.machine.loadBefore.map((l) => l.toFixed(1)).join(' / ')} at the start and ${r.machine.loadAfter.map((l) => l.toFixed(1)).join(' / ')} at the end — ` +
      `other work was running, which affects only the timings, not the accuracies). Total wall time ${(r.wallSeconds / 60).toFixed(1)} min.`,
    '',
    '## Setup',
    '',
    `- **Data**: Fashion-MNIST from the Debian package \`dataset-fashion-mnist\`: ${r.train.n.toLocaleString('en')} training and ${r.test.n.toLocaleString('en')} test images, 28×28 grey, 10 balanced classes.`,
    `- **Embeddings**: every image was sent as a PNG to the running service (\`POST /v1/datasets/{d}/items\`, JSON with base64 images, 250 per request, 4 requests in flight) and embedded by the default encoder ` +
      `\`${r.model.name}\` (ImageNet MobileNetV2-1.4, sha256 \`${r.model.sha256.slice(0, 16)}…\`), ${r.train.dim}-d, L2-normalised by the service. ` +
      `The images are upscaled by the service's preprocessing (shorter side 256, centre crop 224, grey expanded to RGB). ` +
      `The stored vectors are read back from the service's database and cached under \`bench/.cache/\` keyed by the model's SHA-256; a rerun sends the cached vectors as base64 float32 embeddings instead of images. ` +
      `This run: training set from ${r.train.source} (${r.train.ingestSeconds.toFixed(0)} s, ${(r.train.n / r.train.ingestSeconds).toFixed(0)} items/s), test set from ${r.test.source} (${r.test.ingestSeconds.toFixed(0)} s). ` +
      imagesLine(r),
    `- **Service**: started in-process with \`startService\` (${r.backend === 'native' ? 'native PostgreSQL + pgvector' : 'embedded PGlite'}), API keys on (the harness mints an admin key with \`mintApiKey\` and revokes it at the end). ` +
      `Test images go to a second dataset so they take exactly the same encoder path; they are never used for clustering.`,
    `- **Prototypes**: one full refit (\`POST …/prototypes/refit\`, followed on \`GET /v1/jobs/{id}\`) with **k = ${r.prototypes.k}** ` +
      `(spherical k-means on all ${r.train.n.toLocaleString('en')} training embeddings, seed 0; fit ${((timings.fitMs ?? 0) / 1000).toFixed(1)} s, refit total ${((timings.totalMs ?? 0) / 1000).toFixed(1)} s). ` +
      `Cluster sizes ${sizes[0]}–${sizes[sizes.length - 1]} (median ${sizes[sizes.length >> 1]}). ` +
      `Cluster purity (share of items whose cluster's majority label is their own): ${pct(r.clusterPurity)}%.`,
    `- **Selections**: \`GET /v1/datasets/fmnist-train/selection\` (NDJSON) with \`order=hardest\`, \`order=easiest\`, \`order=random&seed=${r.seeds.join('|')}\`, ` +
      '`order=stratified` (CCS defaults: β = 10% hardest set aside, 50 bins), and `order=hardest&balance=cluster`, for each kept fraction.',
    `- **Classifier**: multinomial logistic regression (softmax, L2 λ = ${r.lambda} on the weights with the mean cross-entropy, bias unregularised) on the ${r.train.dim}-d embeddings, ` +
      'standardised per feature with the mean and standard deviation of the selected subset. Fitted full-batch with L-BFGS (memory 10, Armijo backtracking) ' +
      `until max |∇| ≤ ${r.gtol} (a tenth of scikit-learn's default tolerance for the same solver) or the relative decrease of the objective in one iteration is below ${r.ftol}, at most ${r.maxIterations} iterations; ` +
      'the data-sized products (X·W, the softmax cross-entropy and Xᵀ(P − Y)) run in an onnxruntime graph built in code (`bench/eval/logreg.ts`). ' +
      `${converged} of ${r.runs.length} fits met a stopping criterion before the iteration cap (see the run table below).`,
    '',
    '## Test accuracy (%)',
    '',
    ...accuracyTable(r),
    '',
    'Bold: the best policy at that fraction. At 100% every policy keeps the whole training set, so one model stands for all. ' +
      'At 90%, stratified (CCS) keeps exactly the easiest 90%: it first sets the hardest β = 10% aside, and the budget is everything that remains — hence the identical figures.',
    '',
    '![Test accuracy vs kept fraction per policy](evaluation-accuracy.svg)',
    '',
    '### What the numbers say',
    '',
    ...findings(r),
    '',
    '## Per-class survival of the 30% selections',
    '',
    'Share of each class kept by each policy at 30% (random: mean over the seeds). "mean score" is the class\'s mean prototype score (cosine distance to the nearest centroid). ' +
      `A policy that does not amplify class imbalance keeps about 30% of every class; the training set has ${Math.min(...r.classCounts) === Math.max(...r.classCounts) ? `${r.classCounts[0].toLocaleString('en')} items of every class` : `${Math.min(...r.classCounts).toLocaleString('en')}–${Math.max(...r.classCounts).toLocaleString('en')} items per class`}.`,
    '',
    ...survivalTable(r, 0.3),
    '',
    'Test accuracy within each class (recall on the 1,000 test images of the class) of the models trained on those 30% selections (random: mean over the seeds), and of the model trained on all data:',
    '',
    ...classAccuracyTable(r, 0.3),
    '',
  ];
  if (discussion) lines.push(discussion, '');
  lines.push(
    '## Every training run',
    '',
    '<details><summary>L-BFGS iterations, stopping reason and time of each fit</summary>',
    '',
    ...runsTable(r),
    '',
    '</details>',
    '',
    '## Reproduce',
    '',
    '```sh',
    'sudo apt-get install dataset-fashion-mnist          # the IDX files under /usr/share/datasets/fashion-mnist',
    'sudo bash scripts/install-postgres.sh               # native PostgreSQL + pgvector; prints the URL',
    "EVAL_DATABASE_URL='postgres://…/protoprune?schema=bench_eval' npm run eval",
    '```',
    '',
    `Flags (after \`npm run eval --\`): \`--k=${r.k}\`, \`--fractions=10,20,30,50,70,90,100\`, \`--seeds=1,2,3\`, \`--lambda=${r.lambda}\`, \`--max-iter=${r.maxIterations}\`, \`--gtol=${r.gtol}\`, ` +
      '`--limit=N` / `--test-limit=N` (quick runs on the first N images; the cache is only written by full runs), `--no-cache`, `--embed-only`, `--render` (rewrite this file and the plot from `evaluation-results.json` only). ' +
      'The first run embeds 70,000 images through the service (31 minutes here, most of it under heavy load from other work; see the timings under Setup); reruns reuse `bench/.cache/` and also reuse finished classifier fits whose selection, settings and model are unchanged. ' +
      'Everything in this file, the plot (`evaluation-accuracy.svg`) and the raw numbers (`evaluation-results.json`) are rewritten by each run.',
    '',
  );
  await writeFile(file, lines.join('\n'));
}
