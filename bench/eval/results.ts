/** What an evaluation run produces (docs/evaluation-results.json) and helpers to summarise it. */
import type { FitResult } from './logreg.js';

export interface Policy {
  key: string;
  label: string;
  params: Record<string, string | number>;
  /** Random seeds are averaged into one row. */
  group: string;
}

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

export interface EvalResults {
  createdAt: string;
  machine: { cores: number; cpu: string; memGiB: number; loadBefore: number[]; loadAfter: number[] };
  backend: 'native' | 'embedded';
  model: { name: string; sha256: string };
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
  policies: Pick<Policy, 'key' | 'label' | 'params' | 'group'>[];
  classCounts: number[];
  classMeanScore: number[];
  /** Share of items whose cluster's majority class is their own class. */
  clusterPurity: number;
  runs: RunResult[];
  wallSeconds: number;
}

export const GROUPS = [
  { group: 'hardest', label: 'keep hardest', short: 'hardest', colour: '#d62728' },
  { group: 'easiest', label: 'keep easiest', short: 'easiest', colour: '#1f77b4' },
  { group: 'random', label: 'random (mean, min–max)', short: 'random', colour: '#555555', dash: '5 3' },
  { group: 'stratified', label: 'stratified (CCS)', short: 'stratified', colour: '#2ca02c' },
  { group: 'hardest-cluster', label: 'hardest, balance=cluster', short: 'hardest + balance=cluster', colour: '#ff7f0e' },
];

/** Accuracy of one policy group at one fraction: mean over its runs (seeds), with min and max. */
export function groupAccuracy(results: EvalResults, group: string, fraction: number): { mean: number; min: number; max: number; runs: number } | null {
  const runs = results.runs.filter((r) => r.fraction === fraction && (fraction >= 1 || r.group === group));
  if (runs.length === 0) return null;
  const accs = runs.map((r) => r.accuracy);
  return { mean: accs.reduce((a, b) => a + b, 0) / accs.length, min: Math.min(...accs), max: Math.max(...accs), runs: runs.length };
}

