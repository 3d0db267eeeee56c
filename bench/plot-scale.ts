/**
 * Draws the scale bench's growth curve as an SVG: reads the markdown rows bench/scale.ts prints
 * (one or more runs, from stdin), keeps the one-replica rows, and plots over N (log scale) the
 * refit process's peak RSS next to what the old whole-dataset refit held (0.45 GiB + N·d·4 bytes,
 * the issue's measured rule) and the refit's wall time split by phase.
 *
 *   cat scale-*.log | npx tsx bench/plot-scale.ts --dim=256 > docs/scale.svg
 */
import { Flags } from './lib/args.js';

const flags = new Flags(process.argv.slice(2), ['dim']);
const DIM = flags.int('dim', 256);

interface Point {
  n: number;
  rssGiB: number;
  phases: number[]; // sample read, fit, rescore, switch (s)
}

function parse(text: string): Point[] {
  const points = new Map<number, Point>();
  for (const line of text.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    // | N | ingest | replicas | wall | read / fit / rescore / switch | rate | sample | rss | …
    if (cells.length < 9 || !/^[\d,]+/.test(cells[1]) || cells[3] !== '1') continue;
    const n = Number(cells[1].replace(/[^\d]/g, ''));
    const phases = cells[5].split('/').map((p) => Number(p.trim()));
    if (phases.length !== 4 || phases.some(Number.isNaN)) continue;
    points.set(n, { n, rssGiB: Number(cells[8]), phases }); // a later run of the same N wins
  }
  return [...points.values()].sort((a, b) => a.n - b.n);
}

function svg(points: Point[]): string {
  const width = 760;
  const height = 300;
  const pad = { left: 56, right: 16, top: 36, bottom: 44 };
  const panel = (width - pad.left - pad.right - 60) / 2;
  const minN = Math.min(...points.map((p) => p.n)) / 1.5;
  const maxN = Math.max(...points.map((p) => p.n)) * 1.5;
  const x = (left: number, n: number) => left + ((Math.log10(n) - Math.log10(minN)) / (Math.log10(maxN) - Math.log10(minN))) * panel;
  const plotH = height - pad.top - pad.bottom;
  const oldRss = (n: number) => 0.45 + (n * DIM * 4) / 2 ** 30;
  const maxRss = Math.max(...points.map((p) => Math.max(p.rssGiB, oldRss(p.n))));
  const maxWall = Math.max(...points.map((p) => p.phases.reduce((a, b) => a + b, 0)));
  const y = (value: number, max: number) => pad.top + plotH - (value / max) * plotH;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  const axes = (left: number, title: string, max: number, unit: string) => {
    out.push(`<text x="${left + panel / 2}" y="18" text-anchor="middle" font-size="13">${title}</text>`);
    out.push(`<line x1="${left}" y1="${pad.top + plotH}" x2="${left + panel}" y2="${pad.top + plotH}" stroke="#333"/>`);
    out.push(`<line x1="${left}" y1="${pad.top}" x2="${left}" y2="${pad.top + plotH}" stroke="#333"/>`);
    for (let t = 0; t <= 4; t++) {
      const v = (max * t) / 4;
      out.push(`<text x="${left - 4}" y="${y(v, max) + 4}" text-anchor="end">${v.toFixed(max < 20 ? 1 : 0)}</text>`);
      out.push(`<line x1="${left}" y1="${y(v, max)}" x2="${left + panel}" y2="${y(v, max)}" stroke="#eee"/>`);
    }
    out.push(`<text x="${left - 40}" y="${pad.top + plotH / 2}" transform="rotate(-90 ${left - 40} ${pad.top + plotH / 2})" text-anchor="middle">${unit}</text>`);
    for (const p of points) out.push(`<text x="${x(left, p.n)}" y="${pad.top + plotH + 16}" text-anchor="middle">${p.n >= 1e6 ? `${p.n / 1e6}M` : `${p.n / 1e3}k`}</text>`);
    out.push(`<text x="${left + panel / 2}" y="${height - 8}" text-anchor="middle">items (log scale)</text>`);
  };
  const line = (left: number, values: [number, number][], max: number, color: string, dash = '') => {
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" ${dash ? `stroke-dasharray="${dash}"` : ''} points="${values.map(([n, v]) => `${x(left, n).toFixed(1)},${y(v, max).toFixed(1)}`).join(' ')}"/>`);
    for (const [n, v] of values) out.push(`<circle cx="${x(left, n).toFixed(1)}" cy="${y(v, max).toFixed(1)}" r="3" fill="${color}"/>`);
  };
  const left1 = pad.left;
  axes(left1, 'Peak RSS of the refit process', maxRss * 1.05, 'GiB');
  line(left1, points.map((p) => [p.n, oldRss(p.n)]), maxRss * 1.05, '#c0392b', '5,4');
  line(left1, points.map((p) => [p.n, p.rssGiB]), maxRss * 1.05, '#2471a3');
  out.push(`<text x="${left1 + 8}" y="${pad.top + 12}" fill="#c0392b">old: whole dataset in memory (0.45 GiB + N·d·4)</text>`);
  out.push(`<text x="${left1 + 8}" y="${pad.top + 26}" fill="#2471a3">now: sample + one page per part</text>`);
  const left2 = pad.left + panel + 60;
  axes(left2, 'Refit wall time by phase', maxWall * 1.05, 'seconds');
  const colors = ['#7d3c98', '#d68910', '#2471a3', '#17a589'];
  const names = ['sample read', 'fit', 'rescore', 'switch'];
  const barW = 18;
  for (const p of points) {
    let base = 0;
    p.phases.forEach((seconds, i) => {
      const top = y(base + seconds, maxWall * 1.05);
      out.push(`<rect x="${(x(left2, p.n) - barW / 2).toFixed(1)}" y="${top.toFixed(1)}" width="${barW}" height="${(y(base, maxWall * 1.05) - top).toFixed(1)}" fill="${colors[i]}"/>`);
      base += seconds;
    });
  }
  names.forEach((name, i) => out.push(`<rect x="${left2 + 8}" y="${pad.top + 4 + i * 14}" width="9" height="9" fill="${colors[i]}"/><text x="${left2 + 21}" y="${pad.top + 12 + i * 14}">${name}</text>`));
  out.push('</svg>');
  return out.join('\n');
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', () => {
  const points = parse(input);
  if (points.length === 0) throw new Error('no one-replica rows of bench/scale.ts in the input');
  process.stdout.write(`${svg(points)}\n`);
});
