/** A small dependency-free SVG line chart: accuracy vs keep fraction, one series per policy. */

export interface Series {
  label: string;
  colour: string;
  dash?: string;
  /** Points (x, y) with an optional [low, high] error bar. */
  points: { x: number; y: number; low?: number; high?: number }[];
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
  xTicks: number[];
  /** Format of y tick labels. */
  yFormat?: (y: number) => string;
  xFormat?: (x: number) => string;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** "Nice" tick step for a range covered by about `count` ticks. */
export function niceStep(range: number, count: number): number {
  const raw = range / Math.max(1, count);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * magnitude >= raw) return m * magnitude;
  return 10 * magnitude;
}

export function lineChart(series: Series[], options: ChartOptions): string {
  const width = options.width ?? 800;
  const height = options.height ?? 460;
  const margin = { left: 70, right: 240, top: 40, bottom: 55 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const xs = series.flatMap((s) => s.points.map((p) => p.x)).concat(options.xTicks);
  const ys = series.flatMap((s) => s.points.flatMap((p) => [p.y, p.low ?? p.y, p.high ?? p.y]));
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs);
  const step = niceStep(Math.max(1e-9, Math.max(...ys) - Math.min(...ys)), 6);
  const yMin = Math.floor(Math.min(...ys) / step) * step;
  const yMax = Math.ceil(Math.max(...ys) / step) * step + (Math.max(...ys) === Math.ceil(Math.max(...ys) / step) * step ? step : 0);
  const px = (x: number) => margin.left + ((x - xMin) / (xMax - xMin || 1)) * plotW;
  const py = (y: number) => margin.top + (1 - (y - yMin) / (yMax - yMin || 1)) * plotH;
  const yFormat = options.yFormat ?? ((y: number) => y.toFixed(2));
  const xFormat = options.xFormat ?? ((x: number) => String(x));
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${margin.left + plotW / 2}" y="22" text-anchor="middle" font-size="15">${esc(options.title)}</text>`);
  for (let y = yMin; y <= yMax + step / 2; y += step) {
    out.push(`<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${py(y).toFixed(1)}" y2="${py(y).toFixed(1)}" stroke="#e3e3e3"/>`);
    out.push(`<text x="${margin.left - 8}" y="${(py(y) + 4).toFixed(1)}" text-anchor="end">${esc(yFormat(y))}</text>`);
  }
  for (const x of options.xTicks) {
    out.push(`<line x1="${px(x).toFixed(1)}" x2="${px(x).toFixed(1)}" y1="${margin.top}" y2="${margin.top + plotH}" stroke="#f0f0f0"/>`);
    out.push(`<text x="${px(x).toFixed(1)}" y="${margin.top + plotH + 18}" text-anchor="middle">${esc(xFormat(x))}</text>`);
  }
  out.push(`<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#888"/>`);
  out.push(`<text x="${margin.left + plotW / 2}" y="${height - 12}" text-anchor="middle">${esc(options.xLabel)}</text>`);
  out.push(`<text transform="translate(18 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">${esc(options.yLabel)}</text>`);
  series.forEach((s, i) => {
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    for (const p of pts) {
      if (p.low !== undefined && p.high !== undefined && p.high > p.low) {
        out.push(`<line x1="${px(p.x).toFixed(1)}" x2="${px(p.x).toFixed(1)}" y1="${py(p.low).toFixed(1)}" y2="${py(p.high).toFixed(1)}" stroke="${s.colour}" stroke-width="1.5"/>`);
      }
    }
    out.push(
      `<polyline fill="none" stroke="${s.colour}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''} points="${pts.map((p) => `${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(' ')}"/>`,
    );
    for (const p of pts) out.push(`<circle cx="${px(p.x).toFixed(1)}" cy="${py(p.y).toFixed(1)}" r="3.2" fill="${s.colour}"/>`);
    const ly = margin.top + 14 + i * 22;
    const lx = margin.left + plotW + 16;
    out.push(`<line x1="${lx}" x2="${lx + 26}" y1="${ly}" y2="${ly}" stroke="${s.colour}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    out.push(`<circle cx="${lx + 13}" cy="${ly}" r="3.2" fill="${s.colour}"/>`);
    out.push(`<text x="${lx + 32}" y="${ly + 4}">${esc(s.label)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
