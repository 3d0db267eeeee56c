/** What an evaluation run produces (docs/evaluation-results*.json) and helpers to summarise it. */
import type { FitResult } from './logreg.js';
import { CATALOG, type ParamValue } from './policies.js';

export interface RunResult {
  policy: string;
  group: string;
  fraction: number;
  size: number;
  accuracy: number;
  iterations: number;
  evaluations: number;
  converged: boolean;
  reason: FitResult['reason'];
  loss: number;
  gradMax: number;
  seconds: number;
  /** Kept items per class (for the survival table). */
  perClass: number[];
  /** Test accuracy within each class (recall). */
  perClassAccuracy: number[];
  selectionHash: string;
  /** Variant runs: planted copies among the kept items, and planted (source, copy) pairs with both kept. */
  planted?: { kept: number; pairsBothKept: number };
  /** The fit came from the run cache (its `seconds` are those of the run that computed it). */
  cached?: boolean;
}

export interface ImagesIngest {
  seconds: number;
  loadAverage: number[] | null;
  when: string;
}

export interface Prototypes {
  version: number;
  k: number;
  clusterSizes: number[];
  objective: number | null;
}

/** A policy group as the report draws it (a snapshot of policies.ts's CATALOG at run time). */
export interface GroupInfo {
  group: string;
  label: string;
  short: string;
  colour: string;
  dash?: string;
  seeded: boolean;
  dedup?: boolean;
}

export interface Similarity {
  n: number;
  min: number;
  p10: number;
  median: number;
  p90: number;
  max: number;
}

export interface VariantSummary {
  name: string;
  seed: number;
  ratio: number;
  share: number;
  headClass: number;
  head: number;
  tail: number;
  originals: number;
  copies: number;
  n: number;
  noiseSigma: number;
  maxShift: number;
  flips: boolean;
  /** Planted copies per transform kind. */
  transforms: Record<string, number>;
  /** Cosine similarity of each planted copy's embedding to its source's, per transform kind and over all. */
  copySimilarity: Record<string, Similarity>;
  /** Copies whose stored embedding equals their source's exactly. */
  identicalCopies: number;
  /** For a seeded sample of originals: cosine similarity to the most similar other original. */
  nearestOriginal: Similarity;
  layoutHash: string;
  copiesHash: string;
}

export interface DedupSummary {
  epsilon: number | null;
  jobId: string;
  seconds: number;
  groups: number;
  removed: number;
  /** Variant runs: removed items that are planted copies / originals, and planted pairs inside one group. */
  removedCopies?: number;
  removedOriginals?: number;
  pairsInOneGroup?: number;
}

export interface SelectionMeta {
  size: number;
  budget: number;
  seconds: number;
  /** The answer's X-… headers (e.g. the prototype version; for order=auto, whatever names the policy it chose). */
  headers: Record<string, string>;
}

export interface Timings {
  trainImages: { n: number; source: string; seconds: number; imagesSeconds: number | null; loadAverage: number[] | null };
  testImages: { n: number; source: string; seconds: number; imagesSeconds: number | null; loadAverage: number[] | null };
  copyImages?: { n: number; source: string; seconds: number; imagesSeconds: number | null; loadAverage: number[] | null };
  fillSeconds: number;
  refitSeconds: number;
  dedupSeconds: number | null;
  /** Per policy group: selection requests and their total seconds. */
  selections: Record<string, { requests: number; seconds: number }>;
  /** Per policy group: fits, how many came from the run cache, and the fits' total seconds (cached ones as first measured). */
  training: Record<string, { fits: number; cached: number; seconds: number }>;
}

export interface EvalResults {
  createdAt: string;
  machine: { cores: number; cpu: string; memGiB: number; loadBefore: number[]; loadAfter: number[] };
  backend: 'native' | 'embedded';
  model: { name: string; sha256: string };
  /** Absent in files written before datasets were selectable: Fashion-MNIST, no variant. */
  runKey?: string;
  /** The command line of the run (flags after `npm run eval --`). */
  command?: string;
  dataset?: { key: string; title: string; classNames: string[]; description: string; origin: string; serviceDataset: string; install: string };
  variant?: VariantSummary | null;
  k: number;
  lambda: number;
  maxIterations: number;
  gtol: number;
  ftol: number;
  train: { n: number; dim: number; source: string; ingestSeconds: number; imagesIngest: ImagesIngest | null };
  test: { n: number; source: string; ingestSeconds: number; imagesIngest: ImagesIngest | null };
  prototypes: Prototypes;
  refit: Record<string, unknown>;
  fractions: number[];
  seeds: number[];
  policies: { key: string; label: string; params: Record<string, ParamValue>; group: string }[];
  groups?: GroupInfo[];
  /** Policies the server refused (status and message of the first refusal, and the fractions refused), or whose parameters it ignored. */
  skipped?: { group: string; status: number; message: string; fractions?: number[] }[];
  selectionMeta?: Record<string, SelectionMeta>;
  /** The SemDeDup run the dedup policies used. */
  dedup?: DedupSummary | null;
  /** Every SemDeDup run of this evaluation (the sweep and the one used), for choosing ε. */
  dedupSweep?: DedupSummary[];
  classCounts: number[];
  testClassCounts?: number[];
  classMeanScore: number[];
  /** Share of items whose cluster's majority class is their own class. */
  clusterPurity: number;
  runs: RunResult[];
  timings?: Timings;
  wallSeconds: number;
}

export const catalogGroups = (): GroupInfo[] =>
  CATALOG.map((p) => ({ group: p.name, label: p.label, short: p.short, colour: p.colour, ...(p.dash ? { dash: p.dash } : {}), seeded: p.seeded, ...(p.dedup ? { dedup: true } : {}) }));

/** The groups with runs in these results, in catalog order. */
export function groupsOf(r: EvalResults): GroupInfo[] {
  const all = r.groups ?? catalogGroups();
  return all.filter((g) => r.runs.some((x) => x.group === g.group));
}

export const isFull = (r: EvalResults, run: RunResult): boolean => run.size === r.train.n;

/** The runs standing for a group at a fraction: its own, or at 100% the run on the whole training set (which every non-dedup policy keeps). */
export function groupRuns(r: EvalResults, group: string, fraction: number): RunResult[] {
  const own = r.runs.filter((x) => x.fraction === fraction && x.group === group);
  if (own.length > 0 || fraction < 1) return own;
  const info = (r.groups ?? catalogGroups()).find((g) => g.group === group);
  if (info?.dedup) return [];
  return r.runs.filter((x) => x.fraction === fraction && isFull(r, x)).slice(0, 1);
}

/** Accuracy of one policy group at one fraction: mean over its runs (seeds), with min, max and sample sd. */
export function groupAccuracy(
  r: EvalResults,
  group: string,
  fraction: number,
): { mean: number; min: number; max: number; sd: number; runs: number; size: number } | null {
  const runs = groupRuns(r, group, fraction);
  if (runs.length === 0) return null;
  const accs = runs.map((x) => x.accuracy);
  const mean = accs.reduce((a, b) => a + b, 0) / accs.length;
  const sd = accs.length < 2 ? 0 : Math.sqrt(accs.reduce((a, b) => a + (b - mean) ** 2, 0) / (accs.length - 1));
  return { mean, min: Math.min(...accs), max: Math.max(...accs), sd, runs: runs.length, size: runs.reduce((a, x) => a + x.size, 0) / runs.length };
}
