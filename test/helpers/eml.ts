import assert from 'node:assert/strict';

/** A parsed .eml: headers (unfolded, encoded-words decoded) and the decoded MIME parts. */
export function parseEml(eml: string): { headers: Record<string, string>; parts: { type: string; body: string }[] } {
  const [head, ...rest] = eml.split('\r\n\r\n');
  const headers: Record<string, string> = {};
  for (const line of head!.replace(/\r\n[ \t]/g, ' ').split('\r\n')) {
    const i = line.indexOf(':');
    headers[line.slice(0, i).toLowerCase()] = line
      .slice(i + 1)
      .trim()
      .replace(/=\?UTF-8\?B\?([^?]*)\?=/g, (_m, b64: string) => Buffer.from(b64, 'base64').toString('utf8'));
  }
  const boundary = /boundary="([^"]+)"/.exec(headers['content-type']!)![1]!;
  const body = rest.join('\r\n\r\n');
  assert.ok(body.trimEnd().endsWith(`--${boundary}--`), 'the multipart body is closed');
  const parts = body
    .split(`--${boundary}`)
    .slice(1, -1)
    .map((raw) => {
      const [partHead, ...partBody] = raw.replace(/^\r\n/, '').split('\r\n\r\n');
      assert.match(partHead!, /Content-Transfer-Encoding: quoted-printable/);
      const qp = partBody.join('\r\n\r\n').replace(/\r\n$/, '');
      assert.ok(
        qp.split('\r\n').every((l) => l.length <= 76),
        'no encoded line is longer than 76 characters',
      );
      const bytes = qp.replace(/=\r\n/g, '').replace(/=([\dA-F]{2})/g, (_m, hex: string) => `%${hex}`);
      return { type: /Content-Type: ([^;]+)/.exec(partHead!)![1]!, body: decodeURIComponent(bytes.replace(/%(?![\dA-F]{2})/g, '%25')).replace(/\r\n/g, '\n') };
    });
  return { headers, parts };
}
