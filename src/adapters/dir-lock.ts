import { openSync, writeSync, closeSync, readFileSync, unlinkSync } from 'node:fs';
import { DomainError } from '../domain/shared/errors.js';

export interface DirLock {
  release(): void;
}

function holderOf(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes an exclusive lock file holding this process's pid. PGlite keeps the database in one process's
 * memory, so two processes opening the same data folder would corrupt it; a lock left by a process
 * that died is taken over.
 */
export function acquireDirLock(path: string): DirLock {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        process.off('exit', release);
        try {
          if (holderOf(path) === process.pid) unlinkSync(path);
        } catch {
          // already gone
        }
      };
      process.on('exit', release);
      return { release };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = holderOf(path);
      if (pid !== undefined && pid !== process.pid && isAlive(pid)) {
        throw new DomainError(
          'unavailable',
          `the embedded database is in use by another svc process (pid ${pid}); stop it, or set DATABASE_URL to use PostgreSQL`,
          { pid, lock: path },
        );
      }
      // Stale: its process is gone. Remove and try again.
      try {
        unlinkSync(path);
      } catch {
        // another process removed it first
      }
    }
  }
  throw new DomainError('unavailable', `could not lock the embedded database (${path})`);
}
