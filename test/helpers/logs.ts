import { Writable } from 'node:stream';
import type { LevelWithSilent, Logger } from 'pino';
import { createLoggerTo } from '../../src/logger.js';

export type LogLine = Record<string, any>;

/**
 * svc's real logger (its masking and redaction included) writing into memory: `lines` fills with
 * each JSON line as it is written, parsed; `text()` is everything written, as written.
 */
export function capturedLogs(level: LevelWithSilent = 'info'): { logger: Logger; lines: LogLine[]; text: () => string } {
  const lines: LogLine[] = [];
  let text = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      const written = chunk.toString('utf8');
      text += written;
      for (const line of written.split('\n').filter(Boolean)) lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  return { logger: createLoggerTo(level, sink), lines, text: () => text };
}
