import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { VARIABLES, type VariableSpec } from '../../src/config/spec.js';
import { PROJECT_ROOT } from '../../src/paths.js';

/**
 * The value .env.example shows for a variable: its default, or nothing for one without a default
 * or one that only applies together with another (set alone, it is refused).
 */
function defaultText(spec: VariableSpec): string {
  return 'default' in spec && spec.requires === undefined ? String(spec.default) : '';
}

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  throw new Error('expected loadConfig to throw');
}

describe('loadConfig', () => {
  it('uses the documented defaults and the embedded backend when DATABASE_URL is unset', () => {
    const config = loadConfig({});
    expect(config.port).toBe(VARIABLES.PORT.default);
    expect(config.grpcPort).toBe(VARIABLES.GRPC_PORT.default);
    expect(config.logLevel).toBe('info');
    expect(config.database).toEqual({ backend: 'embedded', dataDir: './data' });
  });

  it('selects the native backend when DATABASE_URL is set', () => {
    const config = loadConfig({ DATABASE_URL: 'postgres://u:p@db:5432/x', DATABASE_POOL_MAX: '3' });
    expect(config.database).toEqual({ backend: 'native', url: 'postgres://u:p@db:5432/x', poolMax: 3 });
  });

  it('rejects a non-numeric port, naming the variable and the accepted range', () => {
    const [problem] = problemsOf({ PORT: 'abc' });
    expect(problem).toContain('PORT="abc"');
    expect(problem).toContain('0 to 65535');
  });

  it('rejects an unknown log level, listing the accepted values', () => {
    const [problem] = problemsOf({ LOG_LEVEL: 'loud' });
    expect(problem).toContain('LOG_LEVEL="loud"');
    expect(problem).toContain('fatal, error, warn, info, debug, trace, silent');
  });

  it('reports every bad variable at once', () => {
    const problems = problemsOf({ PORT: '70000', GRPC_PORT: '1.5', DATABASE_URL: 'mysql://x/y' });
    expect(problems).toHaveLength(3);
    expect(problems.join('\n')).toMatch(/GRPC_PORT/);
    expect(problems.join('\n')).toMatch(/DATABASE_URL: expected a URL starting with postgres:\/\/ or postgresql:\/\//);
  });
});

describe('custom embedding model configuration', () => {
  it('refuses model options without a model path', () => {
    const [problem] = problemsOf({ EMBEDDING_MODEL_SIZE: '224' });
    expect(problem).toContain('EMBEDDING_MODEL_SIZE: only apply together with EMBEDDING_MODEL_PATH');
  });

  it('requires size, mean and std with a custom model, naming the variables', () => {
    const problems = problemsOf({ EMBEDDING_MODEL_PATH: '/models/swav.onnx' }).join('\n');
    expect(problems).toMatch(/EMBEDDING_MODEL_SIZE/);
    expect(problems).toMatch(/EMBEDDING_MODEL_MEAN/);
    expect(problems).toMatch(/EMBEDDING_MODEL_STD/);
  });

  it('builds the spec of a custom model from its variables', () => {
    const config = loadConfig({
      EMBEDDING_MODEL_PATH: '/models/swav.onnx',
      EMBEDDING_MODEL_SIZE: '224',
      EMBEDDING_MODEL_MEAN: '0.485,0.456,0.406',
      EMBEDDING_MODEL_STD: '0.229,0.224,0.225',
    });
    expect(config.embedding.custom).toMatchObject({ path: '/models/swav.onnx', inputHeight: 224, inputWidth: 224, layout: 'NCHW' });
    expect(loadConfig({}).embedding.custom).toBeNull();
  });

  it('parses every model variable, in the spellings it accepts', () => {
    const config = loadConfig({
      MODELS_DIR: '/unused',
      EMBEDDING_MODEL_PATH: 'models/dinov2_vits14.onnx',
      EMBEDDING_MODEL_NAME: 'dinov2-small',
      EMBEDDING_MODEL_INPUT: 'pixel_values',
      EMBEDDING_MODEL_OUTPUT: 'embedding',
      EMBEDDING_MODEL_SIZE: '224x196',
      EMBEDDING_MODEL_LAYOUT: 'nchw',
      EMBEDDING_MODEL_CHANNELS: 'bgr',
      EMBEDDING_MODEL_RANGE: '[0, 255]',
      EMBEDDING_MODEL_MEAN: '103.53, 116.28, 123.675',
      EMBEDDING_MODEL_STD: '57.375 57.12 58.395',
      EMBEDDING_MODEL_DIM: '384',
      EMBEDDING_MODEL_RESIZE: '256',
      EMBEDDING_MODEL_SHA256: 'AB'.repeat(32),
    });
    expect(config.embedding.custom).toEqual({
      name: 'dinov2-small',
      path: path.resolve('models/dinov2_vits14.onnx'),
      inputName: 'pixel_values',
      outputName: 'embedding',
      inputHeight: 224,
      inputWidth: 196,
      layout: 'NCHW',
      channelOrder: 'BGR',
      valueRange: '0-255',
      mean: [103.53, 116.28, 123.675],
      std: [57.375, 57.12, 58.395],
      outputDim: 384,
      resizeShorter: 256,
      sha256: 'ab'.repeat(32),
    });
  });

  it('applies the documented defaults to a custom model, and one number to every channel', () => {
    const config = loadConfig({ EMBEDDING_MODEL_PATH: '/m/clip.onnx', EMBEDDING_MODEL_SIZE: '336', EMBEDDING_MODEL_MEAN: '0.5', EMBEDDING_MODEL_STD: '[0.25]' });
    expect(config.embedding.custom).toEqual({
      name: 'clip',
      path: '/m/clip.onnx',
      inputHeight: 336,
      inputWidth: 336,
      layout: VARIABLES.EMBEDDING_MODEL_LAYOUT.default,
      channelOrder: VARIABLES.EMBEDDING_MODEL_CHANNELS.default,
      valueRange: VARIABLES.EMBEDDING_MODEL_RANGE.default,
      mean: [0.5, 0.5, 0.5],
      std: [0.25, 0.25, 0.25],
    });
    expect(config.embedding.custom).toMatchObject({ layout: 'NCHW', channelOrder: 'RGB', valueRange: '0-1' });
    for (const range of ['0-1', '[0,1]', '0..1', '1']) {
      expect(loadConfig({ EMBEDDING_MODEL_PATH: '/m/x.onnx', EMBEDDING_MODEL_SIZE: '8', EMBEDDING_MODEL_MEAN: '0', EMBEDDING_MODEL_STD: '1', EMBEDDING_MODEL_RANGE: range }).embedding.custom?.valueRange).toBe('0-1');
    }
  });

  it('names each bad model variable with what it accepts, all at once', () => {
    const problems = problemsOf({
      EMBEDDING_MODEL_PATH: '/m/x.onnx',
      EMBEDDING_MODEL_SIZE: '224x',
      EMBEDDING_MODEL_LAYOUT: 'CHW',
      EMBEDDING_MODEL_CHANNELS: 'RGBA',
      EMBEDDING_MODEL_RANGE: '0-100',
      EMBEDDING_MODEL_MEAN: '1,2',
      EMBEDDING_MODEL_STD: '1,x,1',
      EMBEDDING_MODEL_DIM: '0',
      EMBEDDING_MODEL_RESIZE: 'big',
      EMBEDDING_MODEL_SHA256: 'abc',
    });
    expect(problems).toEqual([
      'EMBEDDING_MODEL_SIZE="224x": expected N or HxW (e.g. "224" or "224x224" as HxW), each side from 1 to 8192',
      'EMBEDDING_MODEL_LAYOUT="CHW": expected one of NCHW, NHWC',
      'EMBEDDING_MODEL_CHANNELS="RGBA": expected one of RGB, BGR',
      'EMBEDDING_MODEL_RANGE="0-100": expected one of 0-1, 0-255',
      'EMBEDDING_MODEL_MEAN="1,2": expected 1 or 3 finite numbers separated by commas (e.g. "0.485,0.456,0.406"; "0" for none)',
      'EMBEDDING_MODEL_STD="1,x,1": expected 1 or 3 finite numbers separated by commas (e.g. "0.229,0.224,0.225"; "1" for none)',
      'EMBEDDING_MODEL_DIM="0": expected an integer from 1 to 1048576',
      'EMBEDDING_MODEL_RESIZE="big": expected an integer from 1 to 16384',
      'EMBEDDING_MODEL_SHA256="abc": expected a SHA-256 as 64 hex digits',
    ]);
    expect(problemsOf({ EMBEDDING_MODEL_PATH: '/m/x.onnx', EMBEDDING_MODEL_SIZE: '9000', EMBEDDING_MODEL_MEAN: '0', EMBEDDING_MODEL_STD: '1' })).toEqual([
      expect.stringMatching(/^EMBEDDING_MODEL_SIZE="9000": expected N or HxW/),
    ]);
    expect(problemsOf({ EMBEDDING_MODEL_PATH: '/m/x.onnx', PORT: 'abc' })).toEqual([
      expect.stringContaining('PORT="abc"'),
      'EMBEDDING_MODEL_SIZE is required with EMBEDDING_MODEL_PATH (e.g. "224" or "224x224" as HxW)',
      'EMBEDDING_MODEL_MEAN is required with EMBEDDING_MODEL_PATH (e.g. "0.485,0.456,0.406"; "0" for none)',
      'EMBEDDING_MODEL_STD is required with EMBEDDING_MODEL_PATH (e.g. "0.229,0.224,0.225"; "1" for none)',
    ]);
  });

  it('names the variables behind a problem across them', () => {
    const base = { EMBEDDING_MODEL_PATH: '/m/x.onnx', EMBEDDING_MODEL_SIZE: '224' };
    expect(problemsOf({ ...base, EMBEDDING_MODEL_MEAN: '123.675,116.28,103.53', EMBEDDING_MODEL_STD: '58.4,57.1,57.4' })).toEqual([
      expect.stringMatching(/^EMBEDDING_MODEL_MEAN, EMBEDDING_MODEL_RANGE: mean .* is outside the 0-1 value range/),
    ]);
    expect(problemsOf({ ...base, EMBEDDING_MODEL_MEAN: '0', EMBEDDING_MODEL_STD: '1,0,1' })).toEqual([
      'EMBEDDING_MODEL_STD: std values must be > 0, got 1,0,1',
    ]);
    expect(problemsOf({ ...base, EMBEDDING_MODEL_MEAN: '0', EMBEDDING_MODEL_STD: '1', EMBEDDING_MODEL_RESIZE: '200' })).toEqual([
      "EMBEDDING_MODEL_SIZE, EMBEDDING_MODEL_RESIZE: resizeShorter 200 is smaller than the crop's shorter side 224",
    ]);
  });

  it('lists every model variable set without a model path', () => {
    expect(problemsOf({ EMBEDDING_MODEL_LAYOUT: 'NCHW', EMBEDDING_MODEL_SHA256: 'abc', EMBEDDING_MODEL_NAME: 'x' })).toEqual([
      'EMBEDDING_MODEL_NAME, EMBEDDING_MODEL_LAYOUT, EMBEDDING_MODEL_SHA256: only apply together with EMBEDDING_MODEL_PATH',
    ]);
    expect(loadConfig({ EMBEDDING_MODEL_LAYOUT: ' ' }).embedding.custom).toBeNull();
  });
});

describe('configuration documentation', () => {
  const names = Object.keys(VARIABLES).sort();

  it('.env.example documents every variable with its default, and nothing else', () => {
    const text = readFileSync(path.join(PROJECT_ROOT, '.env.example'), 'utf8');
    const assignments = new Map(
      [...text.matchAll(/^#?\s*([A-Z][A-Z0-9_]+)=(.*)$/gm)].map((m) => [m[1], m[2].trim()] as const),
    );
    expect([...assignments.keys()].sort()).toEqual(names);
    for (const [name, spec] of Object.entries(VARIABLES)) {
      expect(assignments.get(name), name).toBe(defaultText(spec));
    }
  });

  it('the README configuration table lists every variable', () => {
    const readme = readFileSync(path.join(PROJECT_ROOT, 'README.md'), 'utf8');
    for (const name of names) expect(readme, name).toMatch(new RegExp(`\\|\\s*\`${name}\`\\s*\\|`));
  });
});
