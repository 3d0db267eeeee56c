/**
 * Runs `task` on each item of `items` (read lazily, so a large source is never held whole) with at
 * most `limit` tasks in flight. The first task that throws stops further items from starting; the
 * ones in flight finish, then that error is thrown. When the source itself throws, the tasks in
 * flight are still waited for before its error goes on (nothing is left running behind the caller).
 */
export async function forEachConcurrently<T>(items: Iterable<T> | AsyncIterable<T>, limit: number, task: (item: T) => Promise<void>): Promise<void> {
  const inFlight = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  try {
    for await (const item of items) {
      if (failure) break;
      const running: Promise<void> = task(item)
        .catch((error: unknown) => {
          failure ??= { error };
        })
        .finally(() => inFlight.delete(running));
      inFlight.add(running);
      if (inFlight.size >= limit) await Promise.race(inFlight);
    }
  } finally {
    await Promise.all(inFlight);
  }
  if (failure) throw failure.error;
}
