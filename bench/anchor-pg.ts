// The database-read anchor for `npm run bench -- api`: bare fastify and a node-postgres Pool reading
// one order row by primary key from the seeded table (GET /orders/:id), with the pool size svc uses.
// Prints "listening on <url>" on stdout.
import Fastify from 'fastify';
import pg from 'pg';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: Number(process.env.POOL_MAX ?? 20) });
const server = Fastify({ logger: false });
server.get<{ Params: { id: string } }>('/orders/:id', async (request, reply) => {
  const { rows } = await pool.query('select id, user_id, status, currency, total, created_at, updated_at from orders where id = $1', [request.params.id]);
  if (!rows[0]) return reply.code(404).send({ status: 404 });
  return rows[0];
});
const url = await server.listen({ port: 0, host: '127.0.0.1' });
process.stdout.write(`listening on ${url}\n`);
process.once(
  'SIGTERM',
  () =>
    void server
      .close()
      .then(() => pool.end())
      .then(() => process.exit(0)),
);
