import { linkSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { DomainError } from '../domain/shared/errors.js';

export interface DirLock {
  release(): void;
}

// A process that died while taking a lock over leaves its claim behind; the claim is taken over the
// same way (a claim on the claim). Each level needs one more such death, so a few levels are plenty.
const MAX_CLAIM_DEPTH = 4;
// A claim is held for a few system calls; a process that finds one held by a live process waits
// this long between looks, this many times, before giving up.
const CLAIM_WAIT_MS = 10;
const CLAIM_WAIT_TRIES = 200;

/** The lock file's text, or undefined when there is none. */
function contentOf(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function pidIn(content: string | undefined): number | undefined {
  const pid = Number.parseInt(content?.trim() ?? '', 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A live process other than this one: a pid equal to ours is left by an earlier process (a container restarted). */
const isOtherLiveProcess = (pid: number | undefined): pid is number => pid !== undefined && pid !== process.pid && isAlive(pid);

/** A file holding this process's pid, written in full under a name of its own. */
function pidFile(path: string): string {
  const tmp = `${path}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, `${process.pid}\n`, { mode: 0o600, flag: 'wx' });
  return tmp;
}

/** Creates `path` with this process's pid in it, or returns false when it exists: never an empty or partly written lock. */
function create(path: string): boolean {
  const tmp = pidFile(path);
  try {
    linkSync(tmp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    unlinkSync(tmp);
  }
}

/** Removes `path` if it still names this process. */
function releaseFile(path: string): void {
  try {
    if (pidIn(contentOf(path)) === process.pid) unlinkSync(path);
  } catch {
    // already gone
  }
}

type Attempt = { owned: true } | { owned: false; holder: number; takingOver?: boolean };

/**
 * One attempt at `path`: create it, or, when the process it names is gone, replace it. Replacing is
 * reserved to the one process that creates the claim `<path>.takeover-<old pid>` (by this same
 * function, so a claim left by a process that died is taken over alike), and that process replaces
 * the file only if it still names the dead pid: two processes that both find the same stale lock
 * cannot both end up owning it, nor can one remove a lock the other has just taken.
 */
function attempt(path: string, depth: number): Attempt | undefined {
  if (create(path)) return { owned: true };
  const content = contentOf(path);
  if (content === undefined) return undefined; // released meanwhile: try again
  const pid = pidIn(content);
  if (isOtherLiveProcess(pid)) return { owned: false, holder: pid };
  if (depth >= MAX_CLAIM_DEPTH) {
    throw new DomainError('unavailable', `could not take over the stale lock ${path}: remove it if no svc process is running`, { lock: path });
  }
  // Stale: the process it names is gone (or it names none: a lock written by an older svc that died).
  const claimPath = `${path}.takeover-${pid ?? 'nopid'}`;
  const claim = attempt(claimPath, depth + 1);
  if (!claim) return undefined;
  if (!claim.owned) return { owned: false, holder: claim.holder, takingOver: true };
  try {
    // Holding the claim, nobody else replaces this file; it may have been replaced before the claim was ours.
    if (contentOf(path) !== content) return undefined;
    renameSync(pidFile(path), path);
    return { owned: true };
  } finally {
    releaseFile(claimPath);
  }
}

/**
 * Takes an exclusive lock file holding this process's pid. PGlite keeps the database in one process's
 * memory, so two processes opening the same data folder would corrupt it; a lock left by a process
 * that died is taken over. Both are atomic: the file appears with the pid already in it (written to a
 * file of its own, then linked to the lock's name), and a stale one is replaced by one process only.
 */
export async function acquireDirLock(path: string): Promise<DirLock> {
  for (let tries = 0; ; tries++) {
    const result = attempt(path, 0);
    if (result?.owned) break;
    if (result && !result.takingOver) {
      throw new DomainError(
        'unavailable',
        `the embedded database is in use by another svc process (pid ${result.holder}); stop it, or set DATABASE_URL to use PostgreSQL`,
        { pid: result.holder, lock: path },
      );
    }
    // Another process is taking a stale lock over (or the lock was just released): look again shortly.
    if (tries >= CLAIM_WAIT_TRIES) {
      throw new DomainError('unavailable', `could not lock the embedded database (${path}): another svc process keeps taking it over; try again`, {
        lock: path,
      });
    }
    await sleep(CLAIM_WAIT_MS);
  }
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    process.off('exit', release);
    releaseFile(path);
  };
  process.on('exit', release);
  return { release };
}
