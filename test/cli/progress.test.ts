import { describe, expect, it } from 'vitest';
import { createProgress } from '../../src/cli/progress.js';
import { capture } from './cli-harness.js';

const io = (isTTY: boolean) => ({ stdout: capture(), stderr: capture(isTTY), env: {} });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('progress on stderr', () => {
  it('draws a bar with counts, rate and ETA on a terminal', async () => {
    const terminal = io(true);
    const progress = createProgress(terminal, { json: false, label: 'ingest', unit: 'images' });
    progress.start(10);
    await sleep(150);
    progress.update(4, { note: '1 failed' });
    await sleep(150);
    progress.stop();
    const drawn = terminal.stderr.text();
    expect(drawn).toMatch(/ingest \[[█░]+\] 40% \| 4\/10 images \| [\d.]+\/s \| ETA \d+ s \| 1 failed/);
    expect(terminal.stdout.text()).toBe('');
  });

  it('writes plain lines elsewhere: none between the intervals, and one at the end', () => {
    const pipe = io(false);
    const progress = createProgress(pipe, { json: false, label: 'refit', unit: 'steps' });
    progress.start(3);
    progress.update(1, { note: 'fit' });
    expect(pipe.stderr.text()).toBe('');
    progress.update(2, { total: 4 });
    progress.stop();
    expect(pipe.stderr.text()).toMatch(/^refit: 2\/4 steps \(50%\), [\d.]+\/s, ETA (\d+ s|\?), fit\n$/);
  });

  it('is silent with --json', () => {
    const quiet = io(true);
    const progress = createProgress(quiet, { json: true, label: 'ingest', unit: 'images' });
    progress.start(2);
    progress.update(2);
    progress.stop();
    expect(quiet.stderr.text()).toBe('');
  });
});
