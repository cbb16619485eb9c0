import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ReceiptData } from '../src/domain/files/receipts.js';
import { isWinAnsi, ReceiptRenderer } from '../src/worker/receipt-pdf.js';

// The PDF receipt itself: the same order renders to the same bytes, and names in any script stay legible.

const receipt = (name: string, product: string): ReceiptData => ({
  orderId: 'ord_01KB0000000000000000000000',
  orderedAt: new Date('2026-11-27T10:00:00Z'),
  paidAt: new Date('2026-11-27T10:00:03Z'),
  customer: { name, email: 'ada@example.com' },
  lines: [{ name: product, sku: 'TEA-1', quantity: 2, unitPrice: 450 }],
  total: 900,
  currency: 'EUR',
  paymentReference: 'pi_123',
});

test('rendering one order twice gives the same bytes (a retried upload overwrites the object with an identical one)', async () => {
  const renderer = new ReceiptRenderer();
  const a = await renderer.render(receipt('Ada Lovelace', 'Green tea'));
  const b = await new ReceiptRenderer().render(receipt('Ada Lovelace', 'Green tea'));
  assert.equal(a.subarray(0, 5).toString('latin1'), '%PDF-');
  assert.ok(a.equals(b));
});

test('the standard fonts shared between receipts, measured from tables, give the bytes pdfkit makes when it opens them for each document', async () => {
  const shared = new ReceiptRenderer();
  const own = new ReceiptRenderer({ shareStandardFonts: false });
  // Kerned pairs (AV, To, Y., r,), WinAnsi characters beyond Latin-1 (€ “ ” –), a name that wraps in
  // its column and enough lines for a second page: every width and position as pdfkit computes them.
  const long: ReceiptData = {
    ...receipt('AVERY “Tom” WAYLAND-Yates', 'Café “crème” – 9,00 €'),
    lines: Array.from({ length: 60 }, (_, i) => ({
      name: i % 7 ? `Tea ${i}, “Yunnan” – VAT. LTD` : 'A very long product name, To Wrap Across Several Lines Of Its Column, Yes.',
      sku: `AV-${i}/TY.${'W'.repeat(i % 9)}`,
      quantity: 1 + (i % 4),
      unitPrice: 99 + i * 7_919,
    })),
    total: 123_456_789,
  };
  for (const data of [receipt('Ada Lovelace', 'Green tea'), receipt('Zoë Müller', 'Café “crème” – 9,00 €'), long]) {
    const expected = await own.render(data);
    assert.ok((await shared.render(data)).equals(expected), data.customer.name);
    assert.ok((await shared.render(data)).equals(expected), `${data.customer.name}, again`);
  }
});

test('Western European text uses the standard Helvetica; any other script an embedded DejaVu Sans, never garbled bytes', async () => {
  assert.ok(isWinAnsi('Zoë Müller “Z” – 9,00 €'));
  assert.ok(!isWinAnsi('Łukasz'));
  assert.ok(!isWinAnsi('Чай'));
  const renderer = new ReceiptRenderer();
  const western = (await renderer.render(receipt('Zoë Müller', 'Crème brûlée'))).toString('latin1');
  assert.match(western, /\/BaseFont \/Helvetica/);
  assert.doesNotMatch(western, /DejaVu/);
  const other = (await renderer.render(receipt('Łukasz Żółć', 'Чай зелёный'))).toString('latin1');
  assert.match(other, /\/BaseFont \/[A-Z]{6}\+DejaVuSans\b/);
  assert.match(other, /\/FontFile2/);
});
