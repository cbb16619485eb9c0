// The HTTP ceiling for `npm run bench -- api`: a bare fastify handler answering a small JSON object,
// no validation, no auth, no database. Prints "listening on <url>" on stdout.
import Fastify from 'fastify';

const server = Fastify({ logger: false });
server.get('/', async () => ({ status: 'ok', service: 'anchor' }));
const url = await server.listen({ port: 0, host: '127.0.0.1' });
process.stdout.write(`listening on ${url}\n`);
process.once('SIGTERM', () => void server.close().then(() => process.exit(0)));
