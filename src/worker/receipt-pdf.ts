import type { ReceiptData } from '../domain/files/receipts.js';
import { formatMoney } from '../domain/shared/money.js';

type PdfDocumentClass = typeof import('pdfkit');

/**
 * Renders receipts as PDF with pdfkit. pdfkit is imported on first use (svc serve starts without
 * it) and stays outside the bundle (it reads its font metrics from files beside its own modules).
 *
 * The bytes depend only on the receipt's data: the document's creation date is the payment's time
 * (pdfkit would take the clock, and derives the file id from it), so rendering one order twice gives
 * the same file, the same size and the same SHA-256.
 */
export class ReceiptRenderer {
  private pdfkit?: Promise<PdfDocumentClass>;

  /** The receipt as a PDF document (A4, the standard Helvetica fonts). */
  async render(receipt: ReceiptData): Promise<Buffer> {
    this.pdfkit ??= import('pdfkit').then((m) => m.default);
    const PDFDocument = await this.pdfkit;
    const doc = new PDFDocument({
      size: 'A4',
      margin: 50,
      info: { Title: `Receipt for order ${receipt.orderId}`, Author: 'svc', Subject: 'Receipt', CreationDate: receipt.paidAt },
    });
    const chunks: Buffer[] = [];
    const done = new Promise<Buffer>((resolve, reject) => {
      doc.on('data', (chunk: Buffer) => chunks.push(chunk));
      doc.on('end', () => resolve(Buffer.concat(chunks)));
      doc.on('error', reject);
    });

    const money = (amount: number) => formatMoney(amount, receipt.currency);
    const left = doc.page.margins.left;
    const width = doc.page.width - left - doc.page.margins.right;
    doc.font('Helvetica-Bold').fontSize(20).text('Receipt', left, 50);
    doc.moveDown(0.5).font('Helvetica').fontSize(10);
    for (const [label, value] of [
      ['Order', receipt.orderId],
      ['Order date', isoDate(receipt.orderedAt)],
      ['Paid', isoDateTime(receipt.paidAt)],
      ['Billed to', `${receipt.customer.name} <${receipt.customer.email}>`],
      ['Payment reference', receipt.paymentReference ?? '(not recorded)'],
    ] as const) {
      doc.font('Helvetica-Bold').text(`${label}: `, { continued: true }).font('Helvetica').text(value);
    }

    // The lines, as a table: item, SKU, quantity, unit price, amount.
    const columns = [
      { title: 'Item', width: width * 0.36, align: 'left' },
      { title: 'SKU', width: width * 0.18, align: 'left' },
      { title: 'Qty', width: width * 0.1, align: 'right' },
      { title: 'Unit price', width: width * 0.18, align: 'right' },
      { title: 'Amount', width: width * 0.18, align: 'right' },
    ] as const;
    const row = (cells: readonly string[], bold = false) => {
      // A row starts on a new page rather than being split across two (an order has up to 100 lines).
      if (doc.y + 40 > doc.page.height - doc.page.margins.bottom) doc.addPage();
      const y = doc.y;
      let x = left;
      let bottom = y;
      doc.font(bold ? 'Helvetica-Bold' : 'Helvetica');
      cells.forEach((cell, i) => {
        const column = columns[i]!;
        doc.text(cell, x, y, { width: column.width - 6, align: column.align });
        bottom = Math.max(bottom, doc.y);
        x += column.width;
      });
      doc.x = left;
      doc.y = bottom + 4;
    };
    doc.moveDown(1.5);
    row(
      columns.map((c) => c.title),
      true,
    );
    doc
      .moveTo(left, doc.y - 2)
      .lineTo(left + width, doc.y - 2)
      .stroke();
    for (const line of receipt.lines) {
      row([line.name, line.sku, String(line.quantity), money(line.unitPrice), money(line.unitPrice * line.quantity)]);
    }
    doc
      .moveTo(left, doc.y)
      .lineTo(left + width, doc.y)
      .stroke();
    doc.moveDown(0.5);
    doc
      .font('Helvetica-Bold')
      .fontSize(12)
      .text(`Total: ${money(receipt.total)}`, left, doc.y, { width, align: 'right' });
    doc.moveDown(2).font('Helvetica').fontSize(9).fillColor('#555555').text('Thank you for your order.', left, doc.y, { width });
    doc.end();
    return done;
  }
}

const isoDate = (d: Date) => d.toISOString().slice(0, 10);
const isoDateTime = (d: Date) => `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
