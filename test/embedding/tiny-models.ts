import onnxProto from 'onnx-proto';
import type { onnx as Onnx } from 'onnx-proto';

const { onnx } = onnxProto;

/**
 * Tiny real ONNX encoders (not mocks: onnxruntime runs them) whose output can be derived by hand:
 * the per-channel mean of the input tensor. With a uniform-colour image every channel mean equals the
 * preprocessed value of that channel, so the embedding is the L2-normalised [x0, x1, x2].
 */
function dim(d: number | string): Onnx.TensorShapeProto.IDimension {
  return typeof d === 'number' ? { dimValue: d } : { dimParam: d };
}

function encode(graph: Onnx.IGraphProto): Uint8Array {
  return onnx.ModelProto.encode({ irVersion: 8, opsetImport: [{ domain: '', version: 17 }], producerName: 'protoprune-test', graph }).finish();
}

/** NCHW input `pixel_values` [N,3,H,W] → GlobalAveragePool → `pooled` [N,3,1,1] (a 4-D pooled output). */
export function channelMeanNchw(height: number, width: number, inputName = 'pixel_values'): Uint8Array {
  return encode({
    name: 'channel_mean_nchw',
    input: [{ name: inputName, type: { tensorType: { elemType: 1, shape: { dim: [dim('N'), dim(3), dim(height), dim(width)] } } } }],
    output: [{ name: 'pooled', type: { tensorType: { elemType: 1, shape: { dim: [dim('N'), dim(3), dim(1), dim(1)] } } } }],
    node: [{ opType: 'GlobalAveragePool', input: [inputName], output: ['pooled'] }],
  });
}

/** NHWC input `x` [N,H,W,3] → ReduceMean over H,W → `y` [N,3]; plus a second output `extra`. */
export function channelMeanNhwc(height: number, width: number): Uint8Array {
  return encode({
    name: 'channel_mean_nhwc',
    input: [{ name: 'x', type: { tensorType: { elemType: 1, shape: { dim: [dim('N'), dim(height), dim(width), dim(3)] } } } }],
    output: [
      { name: 'y', type: { tensorType: { elemType: 1, shape: { dim: [dim('N'), dim(3)] } } } },
      { name: 'extra', type: { tensorType: { elemType: 1, shape: { dim: [dim('N'), dim(3)] } } } },
    ],
    node: [
      {
        opType: 'ReduceMean',
        input: ['x'],
        output: ['y'],
        attribute: [
          { name: 'axes', type: onnx.AttributeProto.AttributeType.INTS, ints: [1, 2] },
          { name: 'keepdims', type: onnx.AttributeProto.AttributeType.INT, i: 0 },
        ],
      },
      { opType: 'Neg', input: ['y'], output: ['extra'] },
    ],
  });
}
