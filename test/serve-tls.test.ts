// svc serve terminating TLS itself (TLS_CERT_FILE, TLS_KEY_FILE: TLS 1.3 only), its security
// headers (helmet; HSTS only over HTTPS) and CORS (CORS_ORIGINS).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'node:https';
import { connect } from 'node:tls';
import type { TestContext } from 'node:test';
import { testServer } from './helpers/server.js';
import { svc, tempDir } from './helpers/cli.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { loadTls } from '../src/server/tls.js';

interface Pem {
  cert: string;
  key: string;
  /** The certificate's contents, to trust it as a client. */
  ca: Buffer;
}

/** A self-signed certificate for 127.0.0.1 and localhost (openssl), in a folder of the test's own. */
function selfSigned(t: TestContext, name = 'server'): Pem {
  const dir = tempDir(t);
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost'].concat([
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout',
      key,
      '-out',
      cert,
    ]),
    { stdio: 'ignore' },
  );
  return { cert, key, ca: readFileSync(cert) };
}

/** GET over HTTPS trusting `ca`: status, headers, body. */
function get(url: string, ca: Buffer): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('with TLS_CERT_FILE and TLS_KEY_FILE svc serve answers over HTTPS (TLS 1.3), with HSTS; TLS 1.2 is refused', async (t) => {
  const pem = selfSigned(t);
  const ts = await testServer(t, { env: { TLS_CERT_FILE: pem.cert, TLS_KEY_FILE: pem.key } });
  assert.match(ts.url, /^https:\/\/127\.0\.0\.1:\d+$/);

  await t.test('health answers over TLS 1.3 with the security headers', async () => {
    for (const path of ['/health/live', '/health/ready']) {
      const res = await get(`${ts.url}${path}`, pem.ca);
      assert.equal(res.status, 200, res.body);
      assert.equal(res.headers['strict-transport-security'], 'max-age=31536000');
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
    }
  });

  await t.test('the API works over HTTPS', async () => {
    const res = await get(`${ts.url}/api/v2/products`, pem.ca);
    assert.equal(res.status, 401, res.body);
    assert.equal(JSON.parse(res.body).code, 'unauthorized');
  });

  await t.test('a client offering at most TLS 1.2 is refused in the handshake', async () => {
    const { port } = new URL(ts.url);
    const failure = await new Promise<Error | undefined>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port: Number(port), ca: pem.ca, maxVersion: 'TLSv1.2', servername: 'localhost' });
      socket.once('secureConnect', () => {
        socket.destroy();
        resolve(undefined);
      });
      socket.once('error', resolve);
    });
    assert.ok(failure, 'the TLS 1.2 handshake succeeded');
    assert.match(String((failure as NodeJS.ErrnoException).code ?? failure.message), /PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|alert protocol version/i);
  });

  await t.test('the negotiated protocol is TLS 1.3', async () => {
    const { port } = new URL(ts.url);
    const version = await new Promise<string | null>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port: Number(port), ca: pem.ca, servername: 'localhost' }, () => {
        resolve(socket.getProtocol());
        socket.destroy();
      });
      socket.once('error', reject);
    });
    assert.equal(version, 'TLSv1.3');
  });
});

test('TLS configuration mistakes are configuration errors naming the key', (t) => {
  const pem = selfSigned(t);
  const other = selfSigned(t, 'other');
  const dir = tempDir(t);
  const garbage = join(dir, 'garbage.pem');
  writeFileSync(garbage, 'not a pem file\n');
  const tls = (env: Record<string, string>) => () => loadTls(loadConfig({ LOG_LEVEL: 'silent', ...env }));

  assert.throws(tls({ TLS_CERT_FILE: pem.cert }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.key, 'TLS_CERT_FILE');
    assert.match(err.message, /TLS_CERT_FILE is set but TLS_KEY_FILE is not/);
    return true;
  });
  assert.throws(tls({ TLS_KEY_FILE: pem.key }), /TLS_KEY_FILE is set but TLS_CERT_FILE is not/);
  assert.throws(
    tls({ TLS_CERT_FILE: join(dir, 'missing.crt'), TLS_KEY_FILE: pem.key }),
    /^ConfigError: TLS_CERT_FILE: cannot read .*missing\.crt: no such file$/,
  );
  assert.throws(tls({ TLS_CERT_FILE: pem.cert, TLS_KEY_FILE: dir }), /^ConfigError: TLS_KEY_FILE: cannot read .*: it is a folder$/);
  assert.throws(tls({ TLS_CERT_FILE: garbage, TLS_KEY_FILE: pem.key }), /^ConfigError: TLS_CERT_FILE: .*garbage\.pem is not a PEM certificate$/);
  assert.throws(tls({ TLS_CERT_FILE: pem.cert, TLS_KEY_FILE: garbage }), /^ConfigError: TLS_KEY_FILE: .*garbage\.pem is not a PEM private key/);
  assert.throws(
    tls({ TLS_CERT_FILE: pem.cert, TLS_KEY_FILE: other.key }),
    /^ConfigError: TLS_KEY_FILE: .*other\.key is not the private key of the certificate in TLS_CERT_FILE/,
  );
  assert.equal(tls({})(), undefined);
});

test('svc serve with an unreadable TLS key exits 78 naming TLS_KEY_FILE, before touching the database', async (t) => {
  const pem = selfSigned(t);
  const dir = tempDir(t);
  const res = await svc(['serve', '--port', '0'], {
    env: { SVC_DATA_DIR: join(dir, 'data'), TLS_CERT_FILE: pem.cert, TLS_KEY_FILE: join(dir, 'nope.key') },
  });
  assert.equal(res.code, 78, res.stderr);
  assert.match(res.stderr, /TLS_KEY_FILE: cannot read .*nope\.key: no such file/);
});

test('over plain HTTP the security headers are sent without HSTS, unless PUBLIC_URL is https; /docs keeps its own CSP', async (t) => {
  const plain = await testServer(t);
  const res = await plain.server.inject({ method: 'GET', url: '/health/live' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['strict-transport-security'], undefined);
  assert.equal(res.headers['x-content-type-options'], 'nosniff');
  assert.equal(res.headers['x-frame-options'], 'SAMEORIGIN');
  assert.match(String(res.headers['content-security-policy']), /default-src 'self'/);

  // The docs page still renders: its HTML and scripts load under swagger-ui's CSP (hashes of its inline code).
  let docs = await plain.server.inject({ method: 'GET', url: '/docs' });
  for (let hops = 0; docs.statusCode === 302 && hops < 3; hops++) {
    docs = await plain.server.inject({ method: 'GET', url: new URL(String(docs.headers.location), 'http://x/docs/').pathname });
  }
  assert.equal(docs.statusCode, 200, `${docs.statusCode} ${String(docs.headers.location)}`);
  assert.match(docs.body, /swagger-ui/);
  assert.match(String(docs.headers['content-security-policy']), /img-src 'self' data: validator\.swagger\.io; object-src 'none'; script-src 'self'/);
  const script = await plain.server.inject({ method: 'GET', url: '/docs/static/swagger-initializer.js' });
  assert.equal(script.statusCode, 200);

  const behindTls = await testServer(t, { env: { PUBLIC_URL: 'https://api.example.com' } });
  const hsts = await behindTls.server.inject({ method: 'GET', url: '/health/live' });
  assert.equal(hsts.headers['strict-transport-security'], 'max-age=31536000');
});

test('CORS: an allowed origin gets the CORS headers, another one and the default (CORS_ORIGINS unset) get none', async (t) => {
  const preflight = (origin: string) => ({
    method: 'OPTIONS' as const,
    url: '/api/v2/products',
    headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
  });
  const ts = await testServer(t, { env: { CORS_ORIGINS: 'https://shop.example.com, http://localhost:5173' } });

  const allowed = await ts.server.inject(preflight('https://shop.example.com'));
  assert.equal(allowed.statusCode, 204);
  assert.equal(allowed.headers['access-control-allow-origin'], 'https://shop.example.com');
  assert.match(String(allowed.headers['access-control-allow-methods']), /GET/);
  assert.match(String(allowed.headers['access-control-allow-headers']), /authorization/);
  assert.equal(allowed.headers['access-control-allow-credentials'], undefined);

  const simple = await ts.server.inject({ method: 'GET', url: '/health/live', headers: { origin: 'http://localhost:5173' } });
  assert.equal(simple.headers['access-control-allow-origin'], 'http://localhost:5173');
  assert.match(String(simple.headers['access-control-expose-headers']), /x-trace-id/);

  const denied = await ts.server.inject(preflight('https://evil.example.com'));
  assert.equal(denied.headers['access-control-allow-origin'], undefined);
  const lookalike = await ts.server.inject(preflight('https://shop.example.com.evil.example'));
  assert.equal(lookalike.headers['access-control-allow-origin'], undefined);

  const none = await testServer(t);
  const off = await none.server.inject(preflight('https://shop.example.com'));
  assert.equal(off.headers['access-control-allow-origin'], undefined);

  const any = await testServer(t, { env: { CORS_ORIGINS: '*' } });
  const star = await any.server.inject(preflight('https://anywhere.example'));
  assert.equal(star.headers['access-control-allow-origin'], '*');
  assert.equal(star.headers['access-control-allow-credentials'], undefined);
});

test('CORS_ORIGINS takes exact origins, or * alone', () => {
  assert.equal(loadConfig({ CORS_ORIGINS: 'https://a.example/, http://b.example:8080' }).CORS_ORIGINS, 'https://a.example,http://b.example:8080');
  for (const bad of ['*,https://a.example', 'https://a.example/path', 'a.example', 'ftp://a.example', 'https://user:pw@a.example']) {
    assert.throws(() => loadConfig({ CORS_ORIGINS: bad }), /^ConfigError: CORS_ORIGINS=".*" in the environment is invalid: expected exact origins/, bad);
  }
});
