// A process that contends for a lock file with acquireDirLock, driven line by line on stdin (used by
// test/dir-lock.test.ts): "take" tries once and answers "owner" or "refused <pid>" (or "error
// <message>"), "release" gives the lock back and answers "released".
import { createInterface } from 'node:readline';
import { acquireDirLock, type DirLock } from '../../src/adapters/dir-lock.js';
import { DomainError } from '../../src/domain/shared/errors.js';

const path = process.argv[2]!;
let held: DirLock | undefined;
const say = (line: string) => process.stdout.write(`${line}\n`);

for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'take') {
    try {
      held = await acquireDirLock(path);
      say('owner');
    } catch (err) {
      const pid = err instanceof DomainError ? err.details.pid : undefined;
      say(typeof pid === 'number' ? `refused ${pid} ${err instanceof Error ? err.message : ''}` : `error ${err instanceof Error ? err.message : String(err)}`);
    }
  } else if (line === 'release') {
    held?.release();
    held = undefined;
    say('released');
  }
}
