/**
 * A strict reader of the Prometheus text exposition format (0.0.4): every line must be a HELP or
 * TYPE comment, another comment, a blank line, or a sample `name{label="value",…} value [timestamp]`.
 * Throws on the first line that does not match; returns the samples for lookups.
 */
const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL_NAME = '[a-zA-Z_][a-zA-Z0-9_]*';
const LABEL_VALUE = '"(?:[^"\\\\\\n]|\\\\[\\\\"n])*"';
// Go's ParseFloat syntax, which Prometheus uses: NaN and Inf in any case.
const VALUE = '(?:[+-]?(?:\\d+\\.?\\d*(?:[eE][+-]?\\d+)?|\\.\\d+(?:[eE][+-]?\\d+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)|[nN][aA][nN])';
const SAMPLE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL_NAME}=${LABEL_VALUE})(?:,${LABEL_NAME}=${LABEL_VALUE})*,?)?\\})? (${VALUE})(?: (-?\\d+))?$`);
const HELP = new RegExp(`^# HELP (${NAME})(?: (?:[^\\\\\\n]|\\\\[\\\\n])*)?$`);
const TYPE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);
const LABEL = new RegExp(`(${LABEL_NAME})=(${LABEL_VALUE})`, 'g');

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parsePrometheusText(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const type = TYPE.exec(line);
      if (type) {
        if (types.has(type[1])) throw new Error(`line ${i + 1}: second TYPE for ${type[1]}`);
        types.set(type[1], type[2]);
        return;
      }
      if (line.startsWith('# HELP') && !HELP.test(line)) throw new Error(`line ${i + 1}: malformed HELP: ${line}`);
      return;
    }
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`line ${i + 1}: not a sample: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1]] = JSON.parse(l[2]) as string;
    const raw = m[3];
    const value = /nan/i.test(raw) ? Number.NaN : /inf/i.test(raw) ? (raw.startsWith('-') ? -Infinity : Infinity) : Number(raw);
    samples.push({ name: m[1], labels, value });
  });
  return { samples, types };
}

/** The value of the sample named `name` whose labels include `labels` (summed over the others); 0 when absent. */
export function sampleValue(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}
