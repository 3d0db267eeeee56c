/**
 * Converts nsfwjs@4.3.0's TF.js MobileNetV2-1.4 graph model (from node_modules) to the default ONNX
 * feature extractor.
 *
 *   npx tsx scripts/convert-model.ts [--models=models] [--out=FILE] [--force]
 *
 * Without --out the model is written to <models>/mobilenet_v2_140_224.onnx, only if missing (as the
 * service does at start-up) unless --force is given. Output bytes are deterministic.
 */
import path from 'node:path';
import {
  convertDefaultModel,
  DEFAULT_MODEL_FILE,
  ensureDefaultModel,
  writeFileAtomic,
} from '../src/embedding/convert/default-model.js';

function arg(name: string): string | undefined {
  const hit = process.argv.slice(2).find((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (!hit) return undefined;
  return hit.includes('=') ? hit.slice(hit.indexOf('=') + 1) : '';
}

async function main(): Promise<void> {
  const unknown = process.argv.slice(2).filter((a) => !/^--(models|out)=.+$|^--force$/.test(a));
  if (unknown.length) {
    console.error(`unknown argument(s): ${unknown.join(' ')}\nusage: npx tsx scripts/convert-model.ts [--models=DIR] [--out=FILE] [--force]`);
    process.exit(2);
  }
  const modelsDir = arg('models') ?? 'models';
  const out = arg('out');
  const force = arg('force') !== undefined;
  const target = path.resolve(out ?? path.join(modelsDir, DEFAULT_MODEL_FILE));
  const t0 = performance.now();
  if (!out && !force) {
    const ensured = await ensureDefaultModel(modelsDir);
    const ms = (performance.now() - t0).toFixed(0);
    console.log(`${ensured.converted ? `converted in ${ms} ms` : 'already present'}: ${ensured.path}\nsha256 ${ensured.sha256}`);
    return;
  }
  const model = convertDefaultModel();
  const convertedMs = performance.now() - t0;
  await writeFileAtomic(target, model.bytes);
  console.log(
    `wrote ${target} in ${convertedMs.toFixed(0)} ms\n` +
      `  ${(model.bytes.length / 2 ** 20).toFixed(1)} MiB, ${model.nodeCount} ONNX nodes, ${model.parameterCount.toLocaleString('en-US')} parameters, ` +
      `${model.outputDim}-d output\n  feature node: ${model.featureNode}\n  sha256 ${model.sha256}`,
  );
}

await main();
