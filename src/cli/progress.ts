import cliProgress from 'cli-progress';
import type { CliIo } from './output.js';

/** Progress of a long command on stderr: a bar on a terminal, periodic plain lines otherwise, nothing with --json. */
export interface Progress {
  start(total: number): void;
  /** `done` of `total` units (the total may change, e.g. between a job's phases); `note` is shown after. */
  update(done: number, options?: { total?: number; note?: string }): void;
  stop(): void;
}

/** How often a non-terminal stderr gets a progress line. */
export const PLAIN_PROGRESS_INTERVAL_MS = 5000;

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  return minutes < 60 ? `${minutes} min ${Math.round(seconds % 60)} s` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** Throughput and time left from the start of the run. */
class Pace {
  private readonly startedAt = Date.now();

  rate(done: number): number {
    const elapsed = (Date.now() - this.startedAt) / 1000;
    return elapsed > 0 ? done / elapsed : 0;
  }

  eta(done: number, total: number): number {
    const rate = this.rate(done);
    return rate > 0 ? Math.max(0, total - done) / rate : Number.POSITIVE_INFINITY;
  }
}

class BarProgress implements Progress {
  private readonly bar: cliProgress.SingleBar;
  private pace = new Pace();
  private total = 0;

  constructor(io: CliIo, label: string, unit: string) {
    this.bar = new cliProgress.SingleBar(
      {
        stream: io.stderr,
        format: `${label} [{bar}] {percentage}% | {value}/{total} ${unit} | {rate}/s | ETA {left}{note}`,
        hideCursor: true,
        barsize: 30,
        fps: 10,
      },
      cliProgress.Presets.shades_classic,
    );
  }

  start(total: number): void {
    this.pace = new Pace();
    this.total = total;
    this.bar.start(total, 0, { rate: '0', left: '?', note: '' });
  }

  update(done: number, options: { total?: number; note?: string } = {}): void {
    if (options.total !== undefined && options.total !== this.total) {
      this.total = options.total;
      this.bar.setTotal(options.total);
    }
    const rate = this.pace.rate(done);
    this.bar.update(done, {
      rate: rate >= 10 ? rate.toFixed(0) : rate.toFixed(1),
      left: formatDuration(this.pace.eta(done, this.total)),
      note: options.note ? ` | ${options.note}` : '',
    });
  }

  stop(): void {
    this.bar.stop();
  }
}

class PlainProgress implements Progress {
  private pace = new Pace();
  private total = 0;
  private done = 0;
  private note = '';
  private lastLineAt = 0;

  constructor(
    private readonly io: CliIo,
    private readonly label: string,
    private readonly unit: string,
  ) {}

  start(total: number): void {
    this.pace = new Pace();
    this.total = total;
    this.lastLineAt = Date.now();
  }

  update(done: number, options: { total?: number; note?: string } = {}): void {
    this.done = done;
    this.total = options.total ?? this.total;
    this.note = options.note ?? this.note;
    if (Date.now() - this.lastLineAt >= PLAIN_PROGRESS_INTERVAL_MS) this.line();
  }

  stop(): void {
    this.line();
  }

  private line(): void {
    this.lastLineAt = Date.now();
    const percent = this.total > 0 ? Math.floor((100 * this.done) / this.total) : 100;
    const rate = this.pace.rate(this.done);
    const left = this.done < this.total ? `, ETA ${formatDuration(this.pace.eta(this.done, this.total))}` : '';
    const note = this.note ? `, ${this.note}` : '';
    this.io.stderr.write(`${this.label}: ${this.done}/${this.total} ${this.unit} (${percent}%), ${rate.toFixed(1)}/s${left}${note}\n`);
  }
}

const SILENT: Progress = { start() {}, update() {}, stop() {} };

export function createProgress(io: CliIo, options: { json: boolean; label: string; unit: string }): Progress {
  if (options.json) return SILENT;
  return io.stderr.isTTY ? new BarProgress(io, options.label, options.unit) : new PlainProgress(io, options.label, options.unit);
}
