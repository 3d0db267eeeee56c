import { open, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * An exclusive lock on a data directory, held as a file containing our pid. Two processes writing
 * one PGlite directory would corrupt it, so the second one is refused; a lock left by a dead
 * process is taken over.
 */
export async function acquireDirectoryLock(dir: string): Promise<{ release(): Promise<void> }> {
  const file = path.join(dir, 'protoprune.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(file, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      return { release: () => unlink(file).catch(() => undefined) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number((await readFile(file, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(holder) && holder > 0 && isAlive(holder)) {
        throw new Error(`data directory ${dir} is in use by process ${holder}`);
      }
      await unlink(file).catch(() => undefined);
    }
  }
  throw new Error(`could not lock data directory ${dir}`);
}
