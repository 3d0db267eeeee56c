import { describe, expect, it } from 'vitest';
import { generateOpenapi } from '../../scripts/export-openapi.js';
import { REQUESTED_ORDER_NAMES, SELECTION_ORDER_NAMES, SELECTION_ORDERS } from '../../src/core/selection.js';
import { loadProtopruneDefinition } from '../../src/grpc/proto.js';
import { DatasetSettingsSchema, DEFAULT_SETTINGS } from '../../src/service/settings.js';

/** What proto-loader's reflection says about a message or enum of protoprune.v1. */
const definition = loadProtopruneDefinition();
const descriptor = (name: string) =>
  (definition[`protoprune.v1.${name}`] as { type: { field?: { name: string }[]; value?: { name: string; number: number }[] } }).type;
const enumValues = (name: string) => descriptor(name).value!.map((v) => v.name);
/** Field names as the service sees them (proto-loader camelCases them). */
const fieldNames = (name: string) => descriptor(name).field!.map((f) => f.name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()));

describe('selection order registry', () => {
  it('the proto enum SelectionOrder holds SELECTION_ORDER_<NAME> for every registered order, and nothing else', () => {
    const expected = REQUESTED_ORDER_NAMES.map((name) => `SELECTION_ORDER_${name.toUpperCase().replaceAll('-', '_')}`);
    expect(enumValues('SelectionOrder').filter((v) => v !== 'SELECTION_ORDER_UNSPECIFIED')).toEqual(expected);
    expect(SELECTION_ORDER_NAMES).toEqual(Object.keys(SELECTION_ORDERS));
  });

  it('the REST order enum lists the registered orders (OpenAPI)', async () => {
    const doc = JSON.parse(await generateOpenapi()) as { paths: Record<string, Record<string, { parameters?: { name: string; schema: { anyOf: { const?: string; enum?: string[] }[] } }[] }>> };
    const order = doc.paths['/v1/datasets/{dataset}/selection'].get.parameters!.find((p) => p.name === 'order')!;
    expect(order.schema.anyOf.flatMap((s) => s.const ?? s.enum)).toEqual(REQUESTED_ORDER_NAMES);
  });
});

describe('dataset settings schema', () => {
  it('the proto DatasetSettings and RefitThresholds have a field for every setting, by name, and no other', () => {
    expect(fieldNames('DatasetSettings').sort()).toEqual(Object.keys(DatasetSettingsSchema.properties).sort());
    expect(fieldNames('RefitThresholds').sort()).toEqual(Object.keys(DatasetSettingsSchema.properties.refit.properties).sort());
  });

  it('DEFAULT_SETTINGS are the schema defaults, and OpenAPI documents them', async () => {
    const defaults = Object.fromEntries(Object.entries(DatasetSettingsSchema.properties).filter(([key]) => key !== 'refit').map(([key, p]) => [key, p.default]));
    const refitDefaults = Object.fromEntries(Object.entries(DatasetSettingsSchema.properties.refit.properties).map(([key, p]) => [key, p.default]));
    expect(DEFAULT_SETTINGS).toEqual({ ...defaults, refit: refitDefaults });
    type Body = { properties: { settings: { properties: Record<string, { default?: unknown }> } } };
    const doc = JSON.parse(await generateOpenapi()) as { paths: Record<string, Record<string, { requestBody: { content: Record<string, { schema: Body }> } }>> };
    const documented = doc.paths['/v1/datasets'].post.requestBody.content['application/json'].schema.properties.settings.properties;
    for (const [key, value] of Object.entries(defaults)) expect(documented[key]?.default, key).toEqual(value);
  });
});
