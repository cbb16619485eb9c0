// `npm run bench -- render`: the CPU the receipts and mail consumers spend on their work outside
// the database, per item, in this process: a receipt rendered (pdfkit), the same receipt uploaded
// to s3rver (@aws-sdk/client-s3), an order confirmation rendered (Handlebars) and sent to the
// SendGrid fake (@sendgrid/mail). The fakes run in a process of their own (bench/fakes-host.ts), so
// their CPU is not counted. Each round times a batch of one kind of item with process.cpuUsage()
// (user + system, every thread of this process); the kinds take turns, after a warm-up round each.
import { Writable } from 'node:stream';
import { S3FileStore } from '../src/adapters/s3-file-store.js';
import { SendGridMailer } from '../src/adapters/sendgrid-mailer.js';
import type { ReceiptData } from '../src/domain/files/receipts.js';
import { formatMoney } from '../src/domain/shared/money.js';
import { createLoggerTo } from '../src/logger.js';
import { MailTemplates } from '../src/worker/mail-templates.js';
import { ReceiptRenderer } from '../src/worker/receipt-pdf.js';
import { FAKE_SENDGRID_API_KEY } from '../test/fakes/sendgrid.js';
import { S3RVER_CREDENTIALS } from '../test/fakes/s3.js';
import { fmt, startFakesProcess } from './harness.js';
import { summarize, type BenchOptions, type Measurement, type Report } from './report.js';

/** Items per timed round, and how many network calls are in flight at once (a worker's prefetch is larger, but this is about CPU). */
const PER_ROUND = { pdf: 100, upload: 100, templates: 200, send: 100 };
const IN_FLIGHT = 8;
/** Orders of 5 items, as the pipeline bench places them. */
const ITEMS_PER_ORDER = 5;

/** The receipt of the n-th order, shaped like the pipeline bench's data (users `User n`, products `Product n`, USD). */
function receipt(n: number): ReceiptData {
  const lines = Array.from({ length: ITEMS_PER_ORDER }, (_, i) => {
    const p = ((n * 31 + i * 197) % 1000) + 1;
    return { name: `Product ${p}`, sku: `SKU-${String(p).padStart(5, '0')}`, quantity: 1 + ((n + i) % 3), unitPrice: 100 + ((p * 7919) % 99900) };
  });
  const id = `ord_01KB${String(n).padStart(22, '0')}`;
  return {
    orderId: id,
    orderedAt: new Date(Date.UTC(2026, 10, 27, 10, 0, n % 60)),
    paidAt: new Date(Date.UTC(2026, 10, 27, 10, 0, (n % 60) + 1)),
    customer: { name: `User ${n}`, email: `user${n}@bench.example.com` },
    lines,
    total: lines.reduce((sum, l) => sum + l.unitPrice * l.quantity, 0),
    currency: 'USD',
    paymentReference: `pi_3Q${String(n).padStart(22, '0')}`,
  };
}

/** The order confirmation's template data, as the mail consumer builds it. */
function confirmation(r: ReceiptData) {
  const money = (amount: number) => formatMoney(amount, r.currency);
  return {
    name: r.customer.name,
    email: r.customer.email,
    orderId: r.orderId,
    total: money(r.total),
    lines: r.lines.map((l) => ({ ...l, unitPrice: money(l.unitPrice), amount: money(l.unitPrice * l.quantity) })),
    receiptUrl: `http://127.0.0.1:3000/api/v1/orders/${r.orderId}/receipt`,
  };
}

/** Runs `one(i)` for i in [0, count), `inFlight` at a time. */
async function batch(count: number, inFlight: number, one: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < count; i = next++) await one(i);
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
}

interface Item {
  name: string;
  perRound: number;
  inFlight: number;
  one: (i: number) => Promise<unknown>;
}

interface Result {
  /** CPU µs per item, one sample per round (summarize's figures, in µs rather than ms: some items take a few µs). */
  cpu: Measurement;
  perRound: number;
  wallUs: number;
}

/**
 * CPU µs per item over `rounds` timed rounds of each (after a warm-up round of each), and the
 * wall-clock µs per item. The items take turns, round by round, so that a busy spell of a shared
 * machine falls on all of them rather than on one item's whole measurement.
 */
async function measure(items: Item[], rounds: number): Promise<Result[]> {
  let n = 0;
  const round = async (item: Item) => {
    const before = process.cpuUsage();
    const start = performance.now();
    await batch(item.perRound, item.inFlight, () => item.one(n++));
    const used = process.cpuUsage(before);
    return { cpuUs: (used.user + used.system) / item.perRound, wallUs: ((performance.now() - start) * 1000) / item.perRound };
  };
  for (const item of items) await round(item);
  const samples = items.map(() => ({ cpu: [] as number[], wall: 0 }));
  for (let r = 0; r < rounds; r++) {
    process.stderr.write(`round ${r + 1} of ${rounds}…\n`);
    for (const [i, item] of items.entries()) {
      const { cpuUs, wallUs } = await round(item);
      samples[i]!.cpu.push(cpuUs);
      samples[i]!.wall += wallUs / rounds;
    }
  }
  return items.map((item, i) => ({ cpu: summarize(item.name, samples[i]!.cpu), perRound: item.perRound, wallUs: samples[i]!.wall }));
}

export async function run(options: BenchOptions): Promise<Report> {
  const rounds = options.runs;
  // The consumers log at info; these adapters log at debug only.
  const logger = createLoggerTo('info', new Writable({ write: (_chunk, _enc, done) => done() }));
  const renderer = new ReceiptRenderer();
  const templates = new MailTemplates();
  const fakes = await startFakesProcess();
  const mailer = new SendGridMailer({ apiKey: FAKE_SENDGRID_API_KEY, apiUrl: fakes.ready.sendgrid, from: 'svc shop <orders@svc.example>', logger });
  const files = new S3FileStore({
    bucket: fakes.ready.s3.bucket,
    endpoint: fakes.ready.s3.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: S3RVER_CREDENTIALS,
    logger,
  });
  try {
    const pdf = await renderer.render(receipt(1));
    const mail = await templates.render('order-confirmation', confirmation(receipt(1)));
    const results = await measure(
      [
        { name: 'receipt PDF rendered (pdfkit)', perRound: PER_ROUND.pdf, inFlight: 1, one: (n) => renderer.render(receipt(n)) },
        // The same bytes each time: the upload's cost, not the renderer's.
        {
          name: 'receipt uploaded to s3rver (S3 client)',
          perRound: PER_ROUND.upload,
          inFlight: IN_FLIGHT,
          one: (n) => files.put(`receipts/${receipt(n).orderId}.pdf`, pdf, { contentType: 'application/pdf' }),
        },
        {
          name: 'email rendered (Handlebars)',
          perRound: PER_ROUND.templates,
          inFlight: 1,
          one: (n) => templates.render('order-confirmation', confirmation(receipt(n))),
        },
        {
          name: 'email sent to the SendGrid fake (@sendgrid/mail)',
          perRound: PER_ROUND.send,
          inFlight: IN_FLIGHT,
          one: (n) =>
            mailer.send({
              to: { email: `user${n}@bench.example.com`, name: `User ${n}` },
              ...mail,
              category: 'order-confirmation',
              reference: `order-confirmation-${receipt(n).orderId}`,
            }),
        },
      ],
      rounds,
    );
    const perOrder = results.reduce((sum, r) => sum + r.cpu.medianMs, 0);
    return {
      title: 'render: CPU per item of the receipts and mail consumers outside the database (this process only)',
      // The figures are µs (see Result), in the table only.
      measurements: [],
      table: {
        header: ['item', 'rounds', 'items/round', 'CPU µs median', 'p90', 'min', 'max', 'wall µs/item'],
        rows: results.map(({ cpu, perRound, wallUs }) => [
          cpu.name,
          String(cpu.runs),
          String(perRound),
          ...[cpu.medianMs, cpu.p90Ms, cpu.minMs, cpu.maxMs].map((us) => fmt(us)),
          fmt(wallUs),
        ]),
      },
      goals: [{ name: 'CPU per order (the four items, medians added)', ratio: 1, value: `${fmt(perOrder / 1000, 2)} ms` }],
      notes: [
        `a receipt of ${ITEMS_PER_ORDER} lines (${fmt(pdf.length)} bytes) and the order confirmation; uploads and sends ${IN_FLIGHT} in flight; the fakes' CPU is not counted`,
        'CPU is process.cpuUsage() (user + system) over a round, divided by its items; wall time includes waiting for the fakes',
      ],
    };
  } finally {
    mailer.close();
    files.close();
    await fakes.stop();
  }
}
