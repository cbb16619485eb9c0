import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import { Flags } from '@oclif/core';
import { SvcCommand } from '../../cli/base-command.js';
import { DomainError } from '../../domain/shared/errors.js';

interface Generated {
  kid: string;
  alg: 'EdDSA' | 'RS256';
  file: string;
  /** How many keys the file holds now (the first signs, all verify). */
  keys: number;
}

const jwks = (keys: unknown[]) => `${JSON.stringify({ keys }, null, 2)}\n`;

function readKeySet(file: string): unknown[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new DomainError('invalid', `${file} is not a readable JSON file (${(err as Error).message}); fix it or pick another --out`, { field: 'out' });
  }
  const keys = (parsed as { keys?: unknown })?.keys;
  if (!Array.isArray(keys) || keys.some((k) => !k || typeof k !== 'object' || typeof (k as { kid?: unknown }).kid !== 'string')) {
    throw new DomainError('invalid', `${file} is not a JSON Web Key Set ({"keys": [...]}, each key with a kid); fix it or pick another --out`, {
      field: 'out',
    });
  }
  return keys;
}

// A place the operator named that cannot take the file is a bad --out (exit 2), said in words; anything else stays unexpected.
function unwritable(file: string, err: NodeJS.ErrnoException): Error {
  const reasons: Record<string, string> = {
    ENOENT: `the folder ${dirname(file)} does not exist`,
    ENOTDIR: `${dirname(file)} is not a folder`,
    EACCES: 'permission denied',
    EPERM: 'permission denied',
    EROFS: 'the file system is read-only',
  };
  const reason = err.code === undefined ? undefined : reasons[err.code];
  if (reason === undefined) return err;
  return new DomainError('invalid', `cannot write ${file}: ${reason}; pick another --out`, { field: 'out' });
}

export default class KeysGenerate extends SvcCommand {
  static override summary = 'Generate a token signing key into a JWKS file (JWT_KEYS_FILE).';
  static override description =
    'Writes a new private JSON Web Key Set with one key (file mode 0600) and prints its kid. It refuses to overwrite an existing ' +
    'file unless --force. To rotate keys, run it with --add on the existing file: the new key goes first and signs new access ' +
    'tokens, the older keys stay in the set and still verify the tokens they signed; remove an old key once its tokens have ' +
    'expired (ACCESS_TOKEN_TTL_SECONDS). Every svc serve instance must read the same file.';
  static override examples = [
    '<%= config.bin %> keys generate --out /run/secrets/jwks.json',
    '<%= config.bin %> keys generate --out jwks.json --alg RS256',
    '<%= config.bin %> keys generate --out jwks.json --add --json',
  ];
  static override flags = {
    out: Flags.string({ summary: 'The JWKS file to write.', default: 'jwks.json' }),
    alg: Flags.string({ summary: 'Signing algorithm.', options: ['EdDSA', 'RS256'], default: 'EdDSA' }),
    add: Flags.boolean({ summary: 'Add the new key in front of the keys of an existing file (rotation).', exclusive: ['force'] }),
    force: Flags.boolean({ summary: 'Replace an existing file (every token it signed stops verifying).', exclusive: ['add'] }),
  };

  /** Generates the key, writes the file and prints the kid. */
  async run(): Promise<Generated> {
    const { flags } = await this.parse(KeysGenerate);
    const file = resolve(flags.out);
    const alg = flags.alg as Generated['alg'];
    const exists = existsSync(file);
    if (exists && statSync(file).isDirectory()) throw new DomainError('invalid', `${file} is a folder; name a file in it with --out`, { field: 'out' });
    if (flags.add && !exists) throw new DomainError('not_found', `${file} does not exist; run without --add to create it`, { field: 'out' });
    if (exists && !flags.add && !flags.force) {
      throw new DomainError('conflict', `${file} already exists; pass --add to rotate a new key into it, or --force to replace it`, { field: 'out' });
    }
    const older = flags.add ? readKeySet(file) : [];
    const { generateSigningJwk } = await import('../../adapters/jwt.js');
    const jwk = await generateSigningJwk(alg);
    const keys = [jwk, ...older];
    try {
      if (exists) {
        // Write beside it and rename, so a reader never sees half a key set.
        const temp = join(dirname(file), `.${basename(file)}.${randomBytes(4).toString('hex')}.tmp`);
        writeFileSync(temp, jwks(keys), { mode: 0o600, flag: 'wx' });
        renameSync(temp, file);
      } else {
        writeFileSync(file, jwks(keys), { mode: 0o600, flag: 'wx' });
      }
    } catch (err) {
      throw unwritable(file, err as NodeJS.ErrnoException);
    }
    this.print(`kid: ${jwk.kid}`);
    this.print(
      older.length
        ? `added a new ${alg} key to ${file}: it signs new tokens; the ${older.length} older key(s) still verify. Restart or redeploy svc serve to use it.`
        : `wrote a new ${alg} signing key to ${file} (mode 0600); set JWT_KEYS_FILE=${file}`,
    );
    return { kid: jwk.kid!, alg, file, keys: keys.length };
  }
}
