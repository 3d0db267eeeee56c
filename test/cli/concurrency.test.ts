import { describe, expect, it } from 'vitest';
import { forEachConcurrently } from '../../src/cli/concurrency.js';

const tick = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('forEachConcurrently', () => {
  it('keeps at most `limit` tasks in flight and runs every item', async () => {
    let inFlight = 0;
    let most = 0;
    const done: number[] = [];
    await forEachConcurrently([...Array(20).keys()], 3, async (i) => {
      most = Math.max(most, ++inFlight);
      await tick(5 + (i % 4));
      inFlight--;
      done.push(i);
    });
    expect(most).toBe(3);
    expect(done.sort((a, b) => a - b)).toEqual([...Array(20).keys()]);
  });

  it('after a task fails starts no further item, lets the ones in flight finish, then throws that error', async () => {
    const started: number[] = [];
    const finished: number[] = [];
    const run = forEachConcurrently([...Array(50).keys()], 4, async (i) => {
      started.push(i);
      await tick(10);
      if (i === 5) throw new Error('item 5 failed');
      finished.push(i);
    });
    await expect(run).rejects.toThrow('item 5 failed');
    expect(started.length).toBeLessThan(50);
    expect(finished.sort((a, b) => a - b)).toEqual(started.filter((i) => i !== 5).sort((a, b) => a - b));
  });

  it('when the source throws mid-way, waits for the tasks in flight before passing its error on', async () => {
    const finished: number[] = [];
    async function* source() {
      yield* [0, 1, 2];
      throw new Error('the file broke off');
    }
    await expect(
      forEachConcurrently(source(), 4, async (i) => {
        await tick(30);
        finished.push(i);
      }),
    ).rejects.toThrow('the file broke off');
    // Nothing left running behind the caller: every started task had finished by then.
    expect(finished.sort()).toEqual([0, 1, 2]);
  });
});
