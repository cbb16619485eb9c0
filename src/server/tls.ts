import { readFileSync } from 'node:fs';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { ConfigError, type Config, type ConfigKey } from '../config.js';

/** What fastify's `https` option takes: the certificate chain, its key, TLS 1.3 only. */
export interface TlsOptions {
  cert: Buffer;
  key: Buffer;
  minVersion: 'TLSv1.3';
}

const READ_ERRORS: Record<string, string> = { ENOENT: 'no such file', EACCES: 'permission denied', EISDIR: 'it is a folder' };

function readPem(config: Config, key: ConfigKey & ('TLS_CERT_FILE' | 'TLS_KEY_FILE')): Buffer {
  const path = config[key]!;
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new ConfigError(key, config.sources[key], `${key}: cannot read ${path}: ${READ_ERRORS[code] ?? code}`);
  }
}

/**
 * The TLS settings of svc serve from TLS_CERT_FILE and TLS_KEY_FILE (undefined when they are unset),
 * checked before anything starts: a file that cannot be read or is not PEM, or a key that does not
 * belong to the certificate, is a ConfigError naming the key. Only TLS 1.3 is offered.
 */
export function loadTls(config: Config): TlsOptions | undefined {
  if (!config.TLS_CERT_FILE || !config.TLS_KEY_FILE) return undefined;
  const cert = readPem(config, 'TLS_CERT_FILE');
  const key = readPem(config, 'TLS_KEY_FILE');
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(cert);
  } catch {
    throw new ConfigError('TLS_CERT_FILE', config.sources.TLS_CERT_FILE, `TLS_CERT_FILE: ${config.TLS_CERT_FILE} is not a PEM certificate`);
  }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch {
    throw new ConfigError(
      'TLS_KEY_FILE',
      config.sources.TLS_KEY_FILE,
      `TLS_KEY_FILE: ${config.TLS_KEY_FILE} is not a PEM private key (an encrypted key is not supported)`,
    );
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new ConfigError(
      'TLS_KEY_FILE',
      config.sources.TLS_KEY_FILE,
      `TLS_KEY_FILE: ${config.TLS_KEY_FILE} is not the private key of the certificate in TLS_CERT_FILE (${config.TLS_CERT_FILE})`,
    );
  }
  return { cert, key, minVersion: 'TLSv1.3' };
}
