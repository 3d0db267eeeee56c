import onnxProto from 'onnx-proto';
import type { onnx as Onnx } from 'onnx-proto';
import type { TfAttrValue, TfNode, TfWeight } from './tfjs-graph.js';

const { onnx } = onnxProto;
const { FLOAT, INT64 } = onnx.TensorProto.DataType;
const AttributeType = onnx.AttributeProto.AttributeType;

/**
 * Translates the subset of TF.js graph ops that MobileNet-style CNNs use into a standard ONNX graph
 * (IR 8, default opset 17), ending at a chosen feature node.
 *
 * Supported ops: Placeholder, Const, Mul/Sub/Add/AddV2 (elementwise; scalar constants allowed),
 * _FusedConv2D and FusedDepthwiseConv2dNative (fused BiasAdd, optional Relu/Relu6), AvgPool, Squeeze,
 * Relu6/Relu, Identity. TF's NHWC tensors are translated to ONNX's NCHW: a single Transpose is inserted
 * where the first convolution reads the NHWC input, and every tensor carries its layout so Squeeze
 * axes and elementwise ops stay right.
 *
 * Traps handled here:
 * - TF `SAME` padding puts the odd pixel at the bottom/right; pads are emitted explicitly from the
 *   static spatial size (equivalent to ONNX SAME_UPPER) rather than relying on auto_pad.
 * - Conv2D weights are HWIO → ONNX OIHW; depthwise weights are [H, W, C, multiplier] → [C·mult, 1, H, W]
 *   with group = C.
 * - Relu6 is Clip(0, 6) with min/max as inputs (opset ≥ 11).
 */

export const IR_VERSION = 8;
export const OPSET = 17;

type Layout = 'NHWC' | 'NCHW' | 'FLAT';

interface Value {
  name: string;
  layout: Layout;
  /** Static spatial size [H, W] for 4-D tensors. */
  spatial?: [number, number];
  channels?: number;
  /** Number of dimensions. */
  rank: number;
  /** Present when the value is a constant (scalar or tensor). */
  constant?: TfWeight;
}

export interface TranslateOptions {
  /** TF node whose output becomes the ONNX graph output. */
  outputNode: string;
  /** ONNX name of the graph input (the TF Placeholder). */
  inputName: string;
  /** ONNX name of the graph output. */
  outputName: string;
  /** Static [H, W, C] of the NHWC input; the batch dimension is symbolic. */
  inputShape: [number, number, number];
  /** Prefix stripped from TF node names to keep ONNX names short. */
  stripPrefix?: string;
  graphName: string;
  docString?: string;
  metadata?: Record<string, string>;
  producerVersion?: string;
}

export interface TranslateResult {
  bytes: Uint8Array;
  outputDim: number;
  nodeCount: number;
  parameterCount: number;
}

function decodeStr(attr: TfAttrValue | undefined): string | undefined {
  return attr?.s === undefined ? undefined : Buffer.from(attr.s, 'base64').toString('utf8');
}

function decodeStrList(attr: TfAttrValue | undefined): string[] {
  return (attr?.list?.s ?? []).map((s) => Buffer.from(s, 'base64').toString('utf8'));
}

function intList(attr: TfAttrValue | undefined): number[] {
  return (attr?.list?.i ?? []).map((v) => Number(v));
}

function intAttr(name: string, i: number): Onnx.IAttributeProto {
  return { name, type: AttributeType.INT, i };
}

function intsAttr(name: string, ints: number[]): Onnx.IAttributeProto {
  return { name, type: AttributeType.INTS, ints };
}

function floatTensor(name: string, dims: number[], values: Float32Array): Onnx.ITensorProto {
  const raw = new Uint8Array(values.length * 4);
  const view = new DataView(raw.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(4 * i, values[i], true);
  return { name, dataType: FLOAT, dims, rawData: raw };
}

function int64Tensor(name: string, values: number[]): Onnx.ITensorProto {
  return { name, dataType: INT64, dims: [values.length], int64Data: values };
}

/** TF data input reference "node" / "node:0" → producing node name (control inputs are filtered out before). */
function producer(ref: string): string {
  const colon = ref.lastIndexOf(':');
  if (colon > 0 && /^\d+$/.test(ref.slice(colon + 1))) {
    if (ref.slice(colon + 1) !== '0') throw new Error(`only output 0 of a node can be consumed (${ref})`);
    return ref.slice(0, colon);
  }
  return ref;
}

/** Explicit [begin, end] padding for TF SAME (odd pixel at the end) or VALID. */
function tfPadding(padding: string, size: number, kernel: number, stride: number, dilation: number): [number, number, number] {
  const effective = (kernel - 1) * dilation + 1;
  if (padding === 'VALID') {
    return [0, 0, Math.floor((size - effective) / stride) + 1];
  }
  if (padding !== 'SAME') throw new Error(`unsupported padding ${padding}`);
  const out = Math.ceil(size / stride);
  const total = Math.max((out - 1) * stride + effective - size, 0);
  const begin = Math.floor(total / 2);
  return [begin, total - begin, out];
}

/** NHWC axis → NCHW axis. */
const NHWC_TO_NCHW_AXIS = [0, 2, 3, 1];

export function translateTfGraph(nodesList: TfNode[], weights: Map<string, TfWeight>, options: TranslateOptions): TranslateResult {
  const nodes = new Map(nodesList.map((n) => [n.name, n]));
  const strip = (name: string): string =>
    options.stripPrefix && name.startsWith(options.stripPrefix) ? name.slice(options.stripPrefix.length) : name;

  const onnxNodes: Onnx.INodeProto[] = [];
  const initializers: Onnx.ITensorProto[] = [];
  const initializerNames = new Set<string>();
  const values = new Map<string, Value>();
  const nchwCache = new Map<string, string>();
  let graphInput: Onnx.IValueInfoProto | undefined;
  let parameterCount = 0;

  const addInitializer = (tensor: Onnx.ITensorProto, params = 0): void => {
    if (initializerNames.has(tensor.name!)) return;
    initializerNames.add(tensor.name!);
    initializers.push(tensor);
    parameterCount += params;
  };

  const clipBounds = (): [string, string] => {
    addInitializer(floatTensor('const/relu6_min', [], new Float32Array([0])));
    addInitializer(floatTensor('const/relu6_max', [], new Float32Array([6])));
    return ['const/relu6_min', 'const/relu6_max'];
  };

  /** The NCHW version of a 4-D value, inserting (once) a Transpose for NHWC values. */
  const asNchw = (v: Value): string => {
    if (v.layout === 'NCHW') return v.name;
    if (v.layout !== 'NHWC' || v.rank !== 4) throw new Error(`${v.name}: expected a 4-D image tensor`);
    let name = nchwCache.get(v.name);
    if (!name) {
      name = `${v.name}/to_nchw`;
      onnxNodes.push({ opType: 'Transpose', name, input: [v.name], output: [name], attribute: [intsAttr('perm', [0, 3, 1, 2])] });
      nchwCache.set(v.name, name);
    }
    return name;
  };

  const constantInput = (v: Value): string => {
    if (!v.constant) throw new Error(`${v.name} is not a constant`);
    addInitializer(floatTensor(v.name, v.constant.shape, v.constant.values), v.constant.values.length);
    return v.name;
  };

  const fusedActivation = (node: TfNode, preActivation: string, outName: string, ops: string[]): string => {
    const rest = ops.slice(1);
    if (rest.length === 0) return preActivation;
    if (rest.length > 1) throw new Error(`${node.name}: unsupported fused ops ${ops.join('+')}`);
    if (rest[0] === 'Relu6') {
      onnxNodes.push({ opType: 'Clip', name: outName, input: [preActivation, ...clipBounds()], output: [outName] });
    } else if (rest[0] === 'Relu') {
      onnxNodes.push({ opType: 'Relu', name: outName, input: [preActivation], output: [outName] });
    } else {
      throw new Error(`${node.name}: unsupported fused activation ${rest[0]}`);
    }
    return outName;
  };

  const convert = (name: string): Value => {
    const done = values.get(name);
    if (done) return done;
    const node = nodes.get(name);
    if (!node) throw new Error(`graph has no node ${name}`);
    // `^name` inputs are control dependencies (TF.js Consts carry `^input`): they order execution only.
    const inputs = (node.input ?? []).filter((ref) => !ref.startsWith('^')).map((ref) => convert(producer(ref)));
    const out = strip(node.name);
    let value: Value;
    switch (node.op) {
      case 'Placeholder': {
        const [h, w, c] = options.inputShape;
        graphInput = {
          name: options.inputName,
          type: {
            tensorType: {
              elemType: FLOAT,
              shape: { dim: [{ dimParam: 'batch' }, { dimValue: h }, { dimValue: w }, { dimValue: c }] },
            },
          },
        };
        value = { name: options.inputName, layout: 'NHWC', spatial: [h, w], channels: c, rank: 4 };
        break;
      }
      case 'Const': {
        const weight = weights.get(node.name);
        if (!weight) throw new Error(`no weight data for constant ${node.name}`);
        value = { name: out, layout: 'FLAT', rank: weight.shape.length, constant: weight };
        break;
      }
      case 'Mul':
      case 'Sub':
      case 'Add':
      case 'AddV2': {
        const [a, b] = inputs;
        const opType = node.op === 'Mul' ? 'Mul' : node.op === 'Sub' ? 'Sub' : 'Add';
        const isScalar = (v: Value): boolean => !!v.constant && v.constant.values.length === 1;
        let base: Value;
        let ins: [string, string];
        if (isScalar(a) && !b.constant) {
          base = b;
          ins = [constantInput(a), b.name];
        } else if (isScalar(b) && !a.constant) {
          base = a;
          ins = [a.name, constantInput(b)];
        } else if (!a.constant && !b.constant) {
          if (a.rank === 4 || b.rank === 4) {
            base = { ...a, layout: 'NCHW' };
            ins = [asNchw(a), asNchw(b)];
          } else {
            if (a.layout !== b.layout) throw new Error(`${node.name}: operand layouts differ`);
            base = a;
            ins = [a.name, b.name];
          }
        } else {
          throw new Error(`${node.name}: only scalar constants are supported in ${node.op}`);
        }
        onnxNodes.push({ opType, name: out, input: ins, output: [out] });
        value = { ...base, name: out, constant: undefined };
        break;
      }
      case '_FusedConv2D':
      case 'FusedDepthwiseConv2dNative': {
        const attr = node.attr ?? {};
        const dataFormat = decodeStr(attr.data_format) ?? 'NHWC';
        if (dataFormat !== 'NHWC') throw new Error(`${node.name}: data_format ${dataFormat} is not supported`);
        const ops = decodeStrList(attr.fused_ops);
        if (ops[0] !== 'BiasAdd' || Number(attr.num_args?.i ?? 1) !== 1) {
          throw new Error(`${node.name}: expected fused BiasAdd with one extra argument, got ${ops.join('+')}`);
        }
        const [x, wv, bv] = inputs;
        if (!wv?.constant || !bv?.constant || !x.spatial) throw new Error(`${node.name}: weights and bias must be constants`);
        const strides = intList(attr.strides);
        const dil = intList(attr.dilations);
        if (strides[0] !== 1 || strides[3] !== 1) throw new Error(`${node.name}: batch/channel strides must be 1`);
        if (dil.length && (dil[0] !== 1 || dil[3] !== 1)) throw new Error(`${node.name}: batch/channel dilations must be 1`);
        const [dh, dw] = dil.length ? [dil[1], dil[2]] : [1, 1];
        const padding = decodeStr(attr.padding) ?? 'VALID';
        if (padding === 'EXPLICIT') throw new Error(`${node.name}: EXPLICIT padding is not supported`);
        const [kh, kw, cin, cout] = wv.constant.shape;
        const src = wv.constant.values;
        const depthwise = node.op === 'FusedDepthwiseConv2dNative';
        const outChannels = depthwise ? cin * cout : cout;
        if (x.channels !== cin) throw new Error(`${node.name}: input has ${x.channels} channels, weights expect ${cin}`);
        if (bv.constant.values.length !== outChannels) throw new Error(`${node.name}: bias length mismatch`);
        const oihw = new Float32Array(src.length);
        // TF: HWIO (conv) or HW C M (depthwise); index = ((h * kw + w) * cin + c) * cout + m.
        for (let h = 0; h < kh; h++) {
          for (let w = 0; w < kw; w++) {
            for (let c = 0; c < cin; c++) {
              for (let m = 0; m < cout; m++) {
                const v = src[((h * kw + w) * cin + c) * cout + m];
                if (depthwise) oihw[((c * cout + m) * kh + h) * kw + w] = v;
                else oihw[((m * cin + c) * kh + h) * kw + w] = v;
              }
            }
          }
        }
        const weightName = `${out}/weight`;
        const biasName = `${out}/bias`;
        addInitializer(floatTensor(weightName, depthwise ? [outChannels, 1, kh, kw] : [cout, cin, kh, kw], oihw), oihw.length);
        addInitializer(floatTensor(biasName, [outChannels], bv.constant.values), outChannels);
        const [pt, pb, oh] = tfPadding(padding, x.spatial[0], kh, strides[1], dh);
        const [pl, pr, ow] = tfPadding(padding, x.spatial[1], kw, strides[2], dw);
        const convOut = ops.length > 1 ? `${out}/conv` : out;
        const attributes = [
          intsAttr('kernel_shape', [kh, kw]),
          intsAttr('strides', [strides[1], strides[2]]),
          intsAttr('dilations', [dh, dw]),
          intsAttr('pads', [pt, pl, pb, pr]),
        ];
        if (depthwise) attributes.push(intAttr('group', cin));
        onnxNodes.push({ opType: 'Conv', name: convOut, input: [asNchw(x), weightName, biasName], output: [convOut], attribute: attributes });
        const result = fusedActivation(node, convOut, out, ops);
        value = { name: result, layout: 'NCHW', spatial: [oh, ow], channels: outChannels, rank: 4 };
        break;
      }
      case 'Relu6':
      case 'Relu': {
        const [x] = inputs;
        if (node.op === 'Relu6') onnxNodes.push({ opType: 'Clip', name: out, input: [x.name, ...clipBounds()], output: [out] });
        else onnxNodes.push({ opType: 'Relu', name: out, input: [x.name], output: [out] });
        value = { ...x, name: out };
        break;
      }
      case 'AvgPool': {
        const [x] = inputs;
        const attr = node.attr ?? {};
        if ((decodeStr(attr.data_format) ?? 'NHWC') !== 'NHWC') throw new Error(`${node.name}: only NHWC pooling is supported`);
        if (!x.spatial) throw new Error(`${node.name}: input spatial size unknown`);
        const k = intList(attr.ksize);
        const s = intList(attr.strides);
        const padding = decodeStr(attr.padding) ?? 'VALID';
        const [pt, pb, oh] = tfPadding(padding, x.spatial[0], k[1], s[1], 1);
        const [pl, pr, ow] = tfPadding(padding, x.spatial[1], k[2], s[2], 1);
        if (padding === 'VALID' && k[1] === x.spatial[0] && k[2] === x.spatial[1]) {
          onnxNodes.push({ opType: 'GlobalAveragePool', name: out, input: [asNchw(x)], output: [out] });
        } else {
          // TF excludes padded cells from the average, as ONNX does with count_include_pad = 0.
          onnxNodes.push({
            opType: 'AveragePool',
            name: out,
            input: [asNchw(x)],
            output: [out],
            attribute: [
              intsAttr('kernel_shape', [k[1], k[2]]),
              intsAttr('strides', [s[1], s[2]]),
              intsAttr('pads', [pt, pl, pb, pr]),
              intAttr('count_include_pad', 0),
            ],
          });
        }
        value = { name: out, layout: 'NCHW', spatial: [oh, ow], channels: x.channels, rank: 4 };
        break;
      }
      case 'Squeeze': {
        const [x] = inputs;
        const dims = intList(node.attr?.squeeze_dims);
        if (x.rank !== 4 || dims.length === 0) throw new Error(`${node.name}: only explicit squeezes of 4-D tensors are supported`);
        const axes = (x.layout === 'NHWC' ? dims : dims.map((d) => NHWC_TO_NCHW_AXIS[d < 0 ? d + 4 : d])).sort((a, b) => a - b);
        const remaining = [0, 1, 2, 3].filter((d) => !axes.includes(d));
        const nchw = x.layout === 'NCHW';
        // Keep channels innermost when the result is a [N, C] matrix: in NCHW the squeezed result is already [N, C].
        if (!(remaining.length === 2 && remaining[0] === 0)) throw new Error(`${node.name}: only squeezes to [N, C] are supported`);
        if (nchw && remaining[1] !== 1) throw new Error(`${node.name}: squeeze would not keep channels`);
        const axesName = `${out}/axes`;
        addInitializer(int64Tensor(axesName, axes));
        onnxNodes.push({ opType: 'Squeeze', name: out, input: [x.name, axesName], output: [out] });
        value = { name: out, layout: 'FLAT', rank: 2, channels: x.channels };
        break;
      }
      case 'Identity': {
        value = inputs[0];
        break;
      }
      default:
        throw new Error(`unsupported TF op ${node.op} (${node.name})`);
    }
    values.set(name, value);
    return value;
  };

  const result = convert(options.outputNode);
  if (!graphInput) throw new Error('the output does not depend on a Placeholder');
  if (result.rank !== 2 || !result.channels) throw new Error(`feature node ${options.outputNode} is not an [N, C] matrix`);
  // Name the feature tensor as requested by renaming the producing node's output.
  const last = onnxNodes[onnxNodes.length - 1];
  if (!last || last.output?.[0] !== result.name) throw new Error('feature node must be the last emitted node');
  last.output = [options.outputName];

  const graph: Onnx.IGraphProto = {
    name: options.graphName,
    docString: options.docString,
    input: [graphInput],
    output: [
      {
        name: options.outputName,
        type: { tensorType: { elemType: FLOAT, shape: { dim: [{ dimParam: 'batch' }, { dimValue: result.channels }] } } },
      },
    ],
    node: onnxNodes,
    initializer: initializers,
  };
  const bytes = onnx.ModelProto.encode({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: OPSET }],
    producerName: 'protoprune',
    producerVersion: options.producerVersion ?? '1',
    docString: options.docString,
    metadataProps: Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value })),
    graph,
  }).finish();
  return { bytes, outputDim: result.channels, nodeCount: onnxNodes.length, parameterCount };
}
