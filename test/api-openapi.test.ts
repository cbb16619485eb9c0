import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Validator } from '@seriousme/openapi-schema-validator';
import type { FastifyInstance } from 'fastify';
import { Ajv } from 'ajv';
import { testServer } from './helpers/server.js';

interface Operation {
  summary?: string;
  tags?: string[];
  security?: Record<string, string[]>[];
  parameters?: { in: string; name: string; required?: boolean }[];
  requestBody?: unknown;
  responses: Record<string, Response>;
}
interface Response {
  description?: string;
  headers?: Record<string, { description?: string; schema: Record<string, unknown> }>;
  content?: Record<string, { schema?: { $ref?: string } }>;
}
type Document = {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { securitySchemes: Record<string, { type: string; scheme?: string }>; schemas: Record<string, unknown> };
};

const API_PREFIXES = ['/api/v1/', '/api/v2/', '/health/'];
const METHODS = ['get', 'put', 'post', 'patch', 'delete'];

/**
 * Every route fastify has registered, as [METHOD, path], read from printRoutes' tree (each line is a
 * path segment below its parent, with the methods it answers).
 */
function registeredRoutes(server: FastifyInstance): [string, string][] {
  const out: [string, string][] = [];
  const stack: string[] = [];
  for (const line of server.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^((?:[│ ] {3})*)[├└]── (\S+) \(([A-Z, ]+)\)$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    stack.length = depth;
    const path = (stack[depth - 1] ?? '') + m[2]!;
    stack.push(path);
    for (const method of m[3]!.split(', ')) if (method !== 'HEAD') out.push([method, path]);
  }
  return out;
}

/** /api/v1/orders/:id as OpenAPI writes it: /api/v1/orders/{id}. */
const openapiPath = (path: string) => path.replace(/:(\w+)/g, '{$1}');

test('the OpenAPI document is valid OpenAPI 3.1 and lists every route with its parameters, security and error responses', async (t) => {
  const ts = await testServer(t);
  const res = await fetch(`${ts.url}/api/openapi.json`);
  assert.equal(res.status, 200);
  const doc = (await res.json()) as Document;

  await t.test('it validates against the OpenAPI 3.1 schema and every $ref resolves', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc));
    assert.deepEqual(result.errors, undefined);
    assert.equal(result.valid, true);
    assert.equal(validator.version, '3.1');
    assert.doesNotThrow(() => validator.resolveRefs());
    const refs = JSON.stringify(doc).match(/"\$ref":"[^"]*"/g) ?? [];
    for (const ref of new Set(refs)) assert.match(ref, /"#\/components\/schemas\/[^"/]+"/);
    for (const name of new Set(refs.map((r) => r.split('/').at(-1)!.slice(0, -1)))) assert.ok(doc.components.schemas[name], `${name} is defined`);
  });

  const routes = registeredRoutes(ts.server).filter(([, path]) => API_PREFIXES.some((p) => path.startsWith(p)));

  await t.test('every route under /api/v1, /api/v2 and /health is in the document, and the document lists no route that does not exist', () => {
    assert.ok(routes.length >= 4, `found routes: ${JSON.stringify(routes)}`);
    const missing = routes.filter(([method, path]) => !doc.paths[openapiPath(path)]?.[method.toLowerCase()]).map((r) => r.join(' '));
    assert.deepEqual(missing, []);
    const listed = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.keys(ops)
        .filter((m) => METHODS.includes(m))
        .map((m) => `${m.toUpperCase()} ${path}`),
    );
    const served = new Set(routes.map(([method, path]) => `${method} ${openapiPath(path)}`));
    assert.deepEqual(
      listed.filter((op) => !served.has(op)),
      [],
    );
    // Both versions serve the same operations; only money differs.
    const v1 = [...served].filter((op) => op.includes('/api/v1/')).map((op) => op.replace('/api/v1/', '/api/'));
    const v2 = [...served].filter((op) => op.includes('/api/v2/')).map((op) => op.replace('/api/v2/', '/api/'));
    assert.deepEqual(v1.sort(), v2.sort());
  });

  // The checks below look at the routes the document has (a missing one already failed above).
  const documented = routes.filter(([method, path]) => doc.paths[openapiPath(path)]?.[method.toLowerCase()]);

  await t.test('every operation has tags, a summary, described responses and its path parameters', () => {
    for (const [method, path] of documented) {
      const op = doc.paths[openapiPath(path)]![method.toLowerCase()]!;
      const name = `${method} ${path}`;
      assert.ok(op.tags?.length, `${name} has tags`);
      assert.ok(op.summary, `${name} has a summary`);
      assert.ok(
        Object.keys(op.responses).some((s) => /^2\d\d$/.test(s)),
        `${name} documents its success response`,
      );
      for (const [status, response] of Object.entries(op.responses)) {
        // "Default Response" is what @fastify/swagger writes when a route says nothing.
        assert.ok(response.description && response.description !== 'Default Response', `${name} ${status} says what it is`);
      }
      for (const param of path.match(/:(\w+)/g) ?? []) {
        assert.ok(
          op.parameters?.some((p) => p.in === 'path' && p.name === param.slice(1) && p.required),
          `${name} documents ${param}`,
        );
      }
    }
  });

  await t.test('error responses are documented as problem documents: 400 wherever there is input, 401 wherever a credential is needed', () => {
    assert.ok(doc.components.schemas.Problem, 'the Problem schema is a component');
    for (const [method, path] of documented) {
      const op = doc.paths[openapiPath(path)]![method.toLowerCase()]!;
      const name = `${method} ${path}`;
      for (const [status, response] of Object.entries(op.responses)) {
        if (Number(status) < 400) continue;
        assert.deepEqual(Object.keys(response.content ?? {}), ['application/problem+json'], `${name} ${status} is served as problem+json`);
        assert.equal(response.content!['application/problem+json']!.schema?.$ref, '#/components/schemas/Problem', `${name} ${status} is a problem document`);
      }
      if (op.requestBody || op.parameters?.length) assert.ok(op.responses['400'], `${name} documents 400`);
      if (op.security?.length) assert.ok(op.responses['401'], `${name} documents 401`);
    }
  });

  await t.test(
    '429 with Retry-After and the RateLimit headers on every rate-limited route, none on health and the Stripe webhook; 503 with Retry-After on every API route',
    () => {
      // Exempt from the rate limits: the load balancer's probes and Stripe's signed deliveries (and /metrics, on its own port).
      const exempt = (path: string) => path.startsWith('/health/') || /^\/api\/v\d+\/webhooks\/stripe$/.test(path);
      assert.ok(documented.some(([, path]) => exempt(path)) && documented.some(([, path]) => !exempt(path)));
      for (const [method, path] of documented) {
        const op = doc.paths[openapiPath(path)]![method.toLowerCase()]!;
        const name = `${method} ${path}`;
        if (exempt(path)) {
          assert.equal(op.responses['429'], undefined, `${name} is not rate-limited`);
        } else {
          assert.deepEqual(
            Object.keys(op.responses['429']?.headers ?? {}).sort(),
            ['RateLimit', 'RateLimit-Policy', 'Retry-After'],
            `${name} documents 429 and its headers`,
          );
          assert.equal(op.responses['429']!.headers!['Retry-After']!.schema.type, 'integer');
          for (const [status, response] of Object.entries(op.responses).filter(([status]) => status !== '429')) {
            for (const header of ['RateLimit', 'RateLimit-Policy']) assert.ok(response.headers?.[header], `${name} documents ${header} on ${status}`);
          }
        }
        if (path.startsWith('/api/')) {
          assert.ok(op.responses['503']?.headers?.['Retry-After'], `${name} documents 503 with Retry-After`);
        }
      }
    },
  );

  await t.test('a route that answers 401 without a credential declares the bearer scheme, and one that declares it answers 401', async () => {
    assert.deepEqual(doc.components.securitySchemes.bearerAuth && { ...doc.components.securitySchemes.bearerAuth, description: undefined }, {
      type: 'http',
      scheme: 'bearer',
      description: undefined,
    });
    for (const [method, path] of documented) {
      const op = doc.paths[openapiPath(path)]![method.toLowerCase()]!;
      const probe = await ts.server.inject({
        method: method as 'GET',
        url: path.replace(/:(\w+)/g, 'x'),
        ...(['POST', 'PATCH', 'PUT'].includes(method) ? { payload: {} } : {}),
      });
      const declared = op.security?.some((s) => 'bearerAuth' in s) ?? false;
      assert.equal(probe.statusCode === 401, declared, `${method} ${path}: answered ${probe.statusCode} without a credential; declares bearer: ${declared}`);
    }
  });
});

test('GET /docs answers the API documentation page as HTML', async (t) => {
  const ts = await testServer(t);
  const res = await fetch(`${ts.url}/docs`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
  const html = await res.text();
  assert.match(html, /swagger/i);
  const init = await fetch(`${ts.url}/docs/static/swagger-initializer.js`);
  assert.equal(init.status, 200);
});

/** Checks a real answer against what the document says of its status: problem+json, the Problem schema, the documented headers. */
function assertDocumented(doc: Document, response: Response, res: { statusCode: number; headers: Record<string, unknown>; body: string }, name: string) {
  assert.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8', name);
  const ajv = new Ajv({ strict: false });
  const validate = ajv.compile(doc.components.schemas.Problem as object);
  const body: unknown = JSON.parse(res.body);
  assert.ok(validate(body), `${name}: ${JSON.stringify(validate.errors)}`);
  assert.equal((body as { status: number }).status, res.statusCode, name);
  for (const [header, { schema }] of Object.entries(response.headers ?? {})) {
    const value = res.headers[header.toLowerCase()];
    assert.equal(typeof value, 'string', `${name} carries ${header}`);
    const parsed = schema.type === 'integer' ? Number(value) : value;
    assert.ok(ajv.validate(schema, parsed), `${name}: ${header}: ${String(value)} is a ${JSON.stringify(schema)}`);
  }
}

test('with a limit of one request a minute, exactly the routes documenting 429 refuse the second request, as documented', async (t) => {
  const ts = await testServer(t, { env: { RATE_LIMIT_IP_PER_MINUTE: '1', RATE_LIMIT_AUTH_IP_PER_MINUTE: '1' } });
  const doc = (await (await fetch(`${ts.url}/api/openapi.json`)).json()) as Document;
  const routes = registeredRoutes(ts.server).filter(([method, path]) => doc.paths[openapiPath(path)]?.[method.toLowerCase()]);
  assert.ok(routes.length >= 20, JSON.stringify(routes));
  let client = 0;
  for (const [method, path] of routes) {
    const op = doc.paths[openapiPath(path)]![method.toLowerCase()]!;
    // Each route from an address of its own: its second request is the one over the limit.
    const remoteAddress = `10.1.${Math.floor(++client / 250)}.${client % 250}`;
    const send = () =>
      ts.server.inject({
        method: method as 'GET',
        url: path.replace(/:(\w+)/g, 'x'),
        remoteAddress,
        ...(['POST', 'PATCH', 'PUT'].includes(method) ? { payload: {} } : {}),
      });
    const first = await send();
    assert.notEqual(first.statusCode, 429, `${method} ${path}: the first request is within the limit`);
    if (op.responses['429']) {
      // Counted, whatever it answered: the RateLimit fields are on it, and documented for its status.
      const policy = /\/auth\/(login|register|refresh)$/.test(path) ? '"auth";q=1;w=60' : '"ip";q=1;w=60';
      assert.equal(first.headers['ratelimit-policy'], policy, `${method} ${path}: ${first.statusCode}`);
      assert.match(String(first.headers['ratelimit']), /^"(ip|auth)";r=0;t=\d+$/, `${method} ${path}: ${first.statusCode}`);
      const documentedAs = op.responses[String(first.statusCode)];
      if (documentedAs) {
        assert.deepEqual(
          Object.keys(documentedAs.headers ?? {}).sort(),
          ['RateLimit', 'RateLimit-Policy'],
          `${method} ${path} documents the fields on ${first.statusCode}`,
        );
      }
    }
    const second = await send();
    const name = `${method} ${path}`;
    if (op.responses['429']) {
      assert.equal(second.statusCode, 429, `${name} documents 429: the second request is refused`);
      assertDocumented(doc, op.responses['429'], second, name);
      // The credential routes count against their own (tighter) limit.
      assert.equal(second.headers['ratelimit-policy'], /\/auth\/(login|register|refresh)$/.test(path) ? '"auth";q=1;w=60' : '"ip";q=1;w=60', name);
    } else {
      assert.notEqual(second.statusCode, 429, `${name} documents no 429 and is not limited`);
    }
  }
});

test('a real 503 (the Stripe webhook without STRIPE_WEBHOOK_SECRET) is the documented problem document with Retry-After', async (t) => {
  const ts = await testServer(t);
  const doc = (await (await fetch(`${ts.url}/api/openapi.json`)).json()) as Document;
  const res = await ts.server.inject({
    method: 'POST',
    url: '/api/v2/webhooks/stripe',
    headers: { 'stripe-signature': 't=1,v1=00' },
    payload: { id: 'evt_1' },
  });
  assert.equal(res.statusCode, 503);
  assertDocumented(doc, doc.paths['/api/v2/webhooks/stripe']!.post!.responses['503']!, res, 'POST /api/v2/webhooks/stripe');
});
