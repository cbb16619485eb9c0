import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { ReceiptData } from '../domain/files/receipts.js';
import { formatMoney } from '../domain/shared/money.js';

type PdfDocumentClass = typeof import('pdfkit');

// What PDF's standard fonts can show: they are WinAnsi-encoded (Latin-1 and these few more, such as
// € and curly quotes); pdfkit writes any other character as bytes that garble the rest of the line.
const WIN_ANSI_EXTRA = new Set([
  0x152, 0x153, 0x160, 0x161, 0x178, 0x17d, 0x17e, 0x192, 0x2c6, 0x2dc, 0x2013, 0x2014, 0x2018, 0x2019, 0x201a, 0x201c, 0x201d, 0x201e, 0x2020, 0x2021, 0x2022,
  0x2026, 0x2030, 0x2039, 0x203a, 0x20ac, 0x2122,
]);

/** Whether a standard font (Helvetica) can show every character of the text. */
export function isWinAnsi(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (!((c >= 0x20 && c <= 0x7e) || (c >= 0xa0 && c <= 0xff) || WIN_ANSI_EXTRA.has(c))) return false;
  }
  return true;
}

interface Fonts {
  regular: string | Buffer;
  bold: string | Buffer;
}

const STANDARD_FONTS: Fonts = { regular: 'Helvetica', bold: 'Helvetica-Bold' };

/**
 * Renders receipts as PDF with pdfkit. pdfkit is imported on first use (svc serve starts without
 * it) and stays outside the bundle (it reads its font metrics from files beside its own modules).
 *
 * Fonts: PDF's standard Helvetica when every character of the receipt is one it can show (Western
 * European names and products: a few milliseconds per receipt); otherwise DejaVu Sans (package
 * dejavu-fonts-ttf: Latin, Greek, Cyrillic and more), embedded as a subset, which costs about a
 * hundred milliseconds more per receipt. Characters DejaVu lacks (CJK, emoji) show as empty boxes,
 * never as garbled text.
 *
 * The bytes depend only on the receipt's data: the document's creation date is the payment's time
 * (pdfkit would take the clock, and derives the file id from it), so rendering one order twice gives
 * the same file, the same size and the same SHA-256.
 */
export class ReceiptRenderer {
  private pdfkit?: Promise<PdfDocumentClass>;
  private unicodeFonts?: Promise<Fonts>;

  /** `shareStandardFonts: false` lets pdfkit open the standard fonts itself for each document (tests compare the bytes). */
  constructor(private readonly options: { shareStandardFonts?: boolean } = {}) {}

  /** The receipt as a PDF document (A4). */
  async render(receipt: ReceiptData): Promise<Buffer> {
    this.pdfkit ??= import('pdfkit').then((m) => m.default);
    const PDFDocument = await this.pdfkit;
    const texts = [receipt.customer.name, receipt.customer.email, receipt.paymentReference ?? '', ...receipt.lines.flatMap((l) => [l.name, l.sku])];
    const fonts = texts.every(isWinAnsi) ? STANDARD_FONTS : await this.loadUnicodeFonts();
    const standard = fonts === STANDARD_FONTS && this.options.shareStandardFonts !== false;
    const doc = new PDFDocument({
      size: 'A4',
      margin: 50,
      info: { Title: `Receipt for order ${receipt.orderId}`, Author: 'svc', Subject: 'Receipt', CreationDate: receipt.paidAt },
      // With the standard fonts, shareStandardFonts gives the document its default font (below).
      ...(standard ? { font: null as unknown as string } : {}),
    });
    if (standard) shareStandardFonts(doc, PDFDocument);
    const chunks: Buffer[] = [];
    const done = new Promise<Buffer>((resolve, reject) => {
      doc.on('data', (chunk: Buffer) => chunks.push(chunk));
      doc.on('end', () => resolve(Buffer.concat(chunks)));
      doc.on('error', reject);
    });

    // A standard font is asked for by its own name, a font file by the name it is registered under.
    // (pdfkit keeps a font it opened under the name it was asked for, except an alias of the font it
    // opened as the document's default, Helvetica: such an alias was opened again, metrics tables
    // and all, at every doc.font() call, which took a fifth of a worker's CPU.)
    const face = { regular: 'regular', bold: 'bold' };
    for (const weight of ['regular', 'bold'] as const) {
      const source = fonts[weight];
      if (typeof source === 'string') face[weight] = source;
      else doc.registerFont(weight, source);
    }
    const money = (amount: number) => formatMoney(amount, receipt.currency);
    const left = doc.page.margins.left;
    const width = doc.page.width - left - doc.page.margins.right;
    doc.font(face.bold).fontSize(20).text('Receipt', left, 50);
    doc.moveDown(0.5).font(face.regular).fontSize(10);
    for (const [label, value] of [
      ['Order', receipt.orderId],
      ['Order date', isoDate(receipt.orderedAt)],
      ['Paid', isoDateTime(receipt.paidAt)],
      ['Billed to', `${receipt.customer.name} <${receipt.customer.email}>`],
      ['Payment reference', receipt.paymentReference ?? '(not recorded)'],
    ] as const) {
      doc.font(face.bold).text(`${label}: `, { continued: true }).font(face.regular).text(value);
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
      doc.font(bold ? face.bold : face.regular);
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
      .font(face.bold)
      .fontSize(12)
      .text(`Total: ${money(receipt.total)}`, left, doc.y, { width, align: 'right' });
    doc.moveDown(2).font(face.regular).fontSize(9).fillColor('#555555').text('Thank you for your order.', left, doc.y, { width });
    doc.end();
    return done;
  }

  // Read once per renderer: pdfkit parses a font given as bytes without touching the disk again.
  private loadUnicodeFonts(): Promise<Fonts> {
    this.unicodeFonts ??= (async () => {
      const dir = join(dirname(createRequire(import.meta.url).resolve('dejavu-fonts-ttf/package.json')), 'ttf');
      const [regular, bold] = await Promise.all([readFile(join(dir, 'DejaVuSans.ttf')), readFile(join(dir, 'DejaVuSans-Bold.ttf'))]);
      return { regular, bold };
    })().catch((err: unknown) => {
      this.unicodeFonts = undefined;
      throw err;
    });
    return this.unicodeFonts;
  }
}

type PdfDocument = InstanceType<PdfDocumentClass>;

/** What shareStandardFonts uses of a pdfkit document's internals (pdfkit is pinned; see there). */
interface FontInternals {
  _fontFamilies?: Record<string, object>;
  _fontCount?: number;
  _font?: object;
}

/** A standard font opened once per process: its prototype and fields (the metrics tables among them), without its document. */
interface SharedFont {
  proto: object;
  fields: Record<string, unknown>;
}

const sharedFonts = new Map<string, SharedFont>();

/**
 * Gives a document created without a default font (`font: null`) Helvetica (F1, its default, as
 * pdfkit would) and Helvetica-Bold (F2), sharing the metrics tables pdfkit builds for each standard
 * font (widths and some 2,700 kerning pairs, about 0.5 ms each) between documents instead of
 * building them again for each receipt. Only read after they are built, they are safe to share;
 * what belongs to a document (its reference, its id) is the document's own. The bytes are those
 * pdfkit makes on its own (test/receipt-pdf.test.ts compares them). This reaches into pdfkit's
 * internals (`_fontFamilies`, `_fontCount`; pdfkit is pinned): if they are not as expected, the
 * document opens its fonts itself.
 */
function shareStandardFonts(doc: PdfDocument, PDFDocument: PdfDocumentClass): void {
  const internals = doc as unknown as FontInternals;
  if (typeof internals._fontFamilies !== 'object' || internals._fontCount !== 0) {
    doc.font(STANDARD_FONTS.regular);
    return;
  }
  for (const name of [STANDARD_FONTS.regular as string, STANDARD_FONTS.bold as string]) {
    let shared = sharedFonts.get(name);
    if (!shared) {
      const opened = (new PDFDocument({ font: null as unknown as string }).font(name) as unknown as FontInternals)._font!;
      const { document: _document, dictionary: _dictionary, id: _id, ...fields } = opened as Record<string, unknown>;
      shared = { proto: withTableMetrics(Object.getPrototypeOf(opened) as object, fields.font as Partial<AfmMetrics> | undefined), fields };
      sharedFonts.set(name, shared);
    }
    const id = `F${++internals._fontCount}`;
    internals._fontFamilies[name] = Object.assign(Object.create(shared.proto) as object, shared.fields, { document: doc, id });
  }
  // The document's default font, as pdfkit sets it.
  doc.font(STANDARD_FONTS.regular);
}

/** What withTableMetrics reads of pdfkit's AFMFont, a standard font's metrics (the `font` field of its StandardFont). */
interface AfmMetrics {
  /** The glyph name of a character code (`.notdef` for one the font cannot show). */
  characterToGlyph(code: number): string;
  widthOfGlyph(glyph: string): number;
  getKernPair(left: string, right: string): number;
  /** The WinAnsi codes of the text, in hex, as the content stream shows them. */
  encodeText(text: string): string[];
  /** `${left}\0${right}` → kerning, in thousandths of the font size. */
  kernPairs: Record<string, number>;
}

/** A glyph as pdfkit's `encode` places it, in thousandths of the font size. */
interface GlyphPosition {
  xAdvance: number;
  yAdvance: number;
  xOffset: number;
  yOffset: number;
  advanceWidth: number;
}

/** What a standard font's `widthOfString` and `encode` compute for each glyph of a text: its width plus its kerning with the next one. */
interface StandardFontMetrics {
  widthOfString(string: string, size: number): number;
  encode(text: string): [string[], GlyphPosition[]];
}

/** Glyphs of a standard font: the 256 WinAnsi codes' (several are `.notdef`), then `.notdef` for every other character. */
const GLYPHS = 257;

/**
 * A prototype for the shared standard font that measures text from tables indexed by character
 * code instead of pdfkit's per-glyph lookups. pdfkit measures each text by glyph name, and each
 * kerning lookup builds a `left\0right` string to find it among some 2,700 pairs; a receipt measures
 * each of its texts two or three times (line wrapping, alignment, encoding), which took about a
 * fifth of its rendering. The tables hold the same integers (widths and kerning in thousandths of
 * the font size), added in the same order, so every width and position is the one pdfkit computes
 * (test/receipt-pdf.test.ts compares the bytes). Anything unexpected (a pdfkit whose internals
 * differ, a width that is not a small integer) keeps pdfkit's own methods.
 */
function withTableMetrics(proto: object, afm: Partial<AfmMetrics> | undefined): object {
  const own = proto as Partial<StandardFontMetrics>;
  if (
    typeof afm?.characterToGlyph !== 'function' ||
    typeof afm.widthOfGlyph !== 'function' ||
    typeof afm.getKernPair !== 'function' ||
    typeof afm.encodeText !== 'function' ||
    typeof afm.kernPairs !== 'object' ||
    typeof own.widthOfString !== 'function' ||
    typeof own.encode !== 'function'
  ) {
    return proto;
  }
  const metrics = afm as AfmMetrics;
  const names = Array.from({ length: GLYPHS - 1 }, (_, code) => metrics.characterToGlyph(code));
  names.push('.notdef');
  const indexes = new Map<string, number[]>();
  names.forEach((name, i) => indexes.set(name, [...(indexes.get(name) ?? []), i]));
  const small = (n: number) => Number.isInteger(n) && Math.abs(n) < 0x8000;
  const widths = new Int16Array(GLYPHS);
  const kerning = new Int16Array(GLYPHS * GLYPHS);
  for (let i = 0; i < GLYPHS; i++) {
    const width = metrics.widthOfGlyph(names[i]!);
    if (!small(width)) return proto;
    widths[i] = width;
  }
  for (const [pair, amount] of Object.entries(metrics.kernPairs)) {
    const [left = '', right = ''] = pair.split('\0');
    // A pair read differently from getKernPair would kern wrongly: keep pdfkit's methods.
    if (!small(amount) || metrics.getKernPair(left, right) !== amount) return proto;
    for (const l of indexes.get(left) ?? []) for (const r of indexes.get(right) ?? []) kerning[l * GLYPHS + r] = amount;
  }

  // Character code → glyph index and hex code, filled in as characters are met.
  const glyphOf = new Int16Array(0x10000).fill(-1);
  const hexOf: string[] = [];
  const glyph = (code: number): number => {
    let g = glyphOf[code]!;
    if (g < 0) {
      g = indexes.get(metrics.characterToGlyph(code))?.[0] ?? GLYPHS - 1;
      glyphOf[code] = g;
      hexOf[code] = metrics.encodeText(String.fromCharCode(code))[0]!;
    }
    return g;
  };
  /** pdfkit's glyphsForString and advancesForGlyphs: each glyph's width plus its kerning with the next. */
  const measure = (text: string): { glyphs: Int16Array; advances: number[] } => {
    const glyphs = new Int16Array(text.length);
    for (let i = 0; i < text.length; i++) glyphs[i] = glyph(text.charCodeAt(i));
    const advances: number[] = [];
    for (let i = 0; i < glyphs.length; i++) {
      advances.push(widths[glyphs[i]!]! + (i + 1 < glyphs.length ? kerning[glyphs[i]! * GLYPHS + glyphs[i + 1]!]! : 0));
    }
    return { glyphs, advances };
  };
  const table: StandardFontMetrics = {
    widthOfString(string, size) {
      let width = 0;
      for (const advance of measure(`${string}`).advances) width += advance;
      const scale = size / 1000;
      return width * scale;
    },
    encode(text) {
      const { glyphs, advances } = measure(`${text}`);
      const encoded: string[] = [];
      const positions: GlyphPosition[] = [];
      for (let i = 0; i < glyphs.length; i++) {
        encoded.push(hexOf[text.charCodeAt(i)]!);
        positions.push({ xAdvance: advances[i]!, yAdvance: 0, xOffset: 0, yOffset: 0, advanceWidth: widths[glyphs[i]!]! });
      }
      return [encoded, positions];
    },
  };
  return Object.assign(Object.create(proto) as object, table);
}

const isoDate = (d: Date) => d.toISOString().slice(0, 10);
const isoDateTime = (d: Date) => `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
