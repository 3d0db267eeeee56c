/** `--name=value` flags (and bare `--name` as "true"), shared by the benchmark and evaluation scripts. */
export class Flags {
  private readonly values = new Map<string, string>();

  constructor(argv: readonly string[], private readonly known: readonly string[]) {
    for (const arg of argv) {
      const match = /^--([\w-]+)(?:=(.*))?$/.exec(arg);
      if (!match) throw new Error(`unrecognised argument ${arg} (expected --name=value)`);
      if (!known.includes(match[1])) throw new Error(`unknown flag --${match[1]}; known: ${known.map((k) => `--${k}`).join(' ')}`);
      this.values.set(match[1], match[2] ?? 'true');
    }
  }

  has(name: string): boolean {
    return this.values.has(name);
  }

  string(name: string, fallback: string): string {
    return this.values.get(name) ?? fallback;
  }

  int(name: string, fallback: number): number {
    const raw = this.values.get(name);
    const value = raw === undefined ? fallback : Number(raw.replaceAll('_', ''));
    if (!Number.isSafeInteger(value) || value < 0) throw new Error(`--${name} must be a non-negative integer, got ${raw}`);
    return value;
  }

  number(name: string, fallback: number): number {
    const raw = this.values.get(name);
    const value = raw === undefined ? fallback : Number(raw);
    if (!Number.isFinite(value)) throw new Error(`--${name} must be a number, got ${raw}`);
    return value;
  }

  bool(name: string, fallback: boolean): boolean {
    const raw = this.values.get(name);
    if (raw === undefined) return fallback;
    if (raw === 'true' || raw === '1') return true;
    if (raw === 'false' || raw === '0') return false;
    throw new Error(`--${name} must be true or false, got ${raw}`);
  }

  ints(name: string, fallback: number[]): number[] {
    const raw = this.values.get(name);
    if (raw === undefined) return fallback;
    return raw.split(',').map((part) => {
      const value = Number(part.replaceAll('_', ''));
      if (!Number.isSafeInteger(value) || value < 0) throw new Error(`--${name}: ${part} is not a non-negative integer`);
      return value;
    });
  }
}
