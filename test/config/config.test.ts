import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { VARIABLES, defaultText } from '../../src/config/spec.js';
import { PROJECT_ROOT } from '../../src/paths.js';

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
