import { randomBytes } from 'node:crypto';
import { link, mkdir, rename, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

// A temporary file beside the target (same folder, same file system, so rename and link are
// atomic), named so that nothing that lists the folder mistakes it for a finished file.
function tempPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
}

/**
 * Writes a file so that a reader sees the old content or the new, never a part: a temporary file,
 * flushed, then renamed over the target. Creates the folder when missing.
 */
export async function writeFileAtomic(path: string, data: string | Buffer, mode = 0o600): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temp = tempPath(path);
  try {
    await writeFile(temp, data, { mode, flush: true });
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
}

/**
 * Creates a file with its whole content only if none is there yet, atomically across processes
 * (a complete temporary file hard-linked to the name: the link fails when the name exists).
 * Resolves to whether this call created it.
 */
export async function createFileExclusive(path: string, data: string | Buffer): Promise<boolean> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temp = tempPath(path);
  await writeFile(temp, data, { mode: 0o600, flush: true });
  try {
    await link(temp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}
