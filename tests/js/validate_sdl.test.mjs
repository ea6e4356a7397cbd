// The committed SDL must build and validate with graphql-js, the reference implementation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { buildSchema, validateSchema, graphqlSync, getIntrospectionQuery } from 'graphql';

const sdlPath = new URL('../../schema.graphql', import.meta.url);
const sdl = readFileSync(sdlPath, 'utf8');

test('schema.graphql builds and validates with graphql-js', () => {
  const schema = buildSchema(sdl);
  const errors = validateSchema(schema);
  assert.deepEqual(errors.map(String), []);
  const result = graphqlSync({ schema, source: getIntrospectionQuery() });
  assert.equal(result.errors, undefined);
  const names = result.data.__schema.types.map((t) => t.name);
  for (const t of ['Registry', 'Server', 'Instance', 'Deployment', 'Cluster', 'MonitoringMetrics', 'InstanceEvent']) {
    assert.ok(names.includes(t), `type ${t} is present`);
  }
});

test('every type and field has a description', () => {
  const schema = buildSchema(sdl);
  const missing = [];
  for (const type of Object.values(schema.getTypeMap())) {
    if (type.name.startsWith('__') || ['String', 'Int', 'Float', 'Boolean', 'ID'].includes(type.name)) continue;
    if (!type.description && !/(Connection|Edge)$/.test(type.name) && type.name !== 'PageInfo') missing.push(type.name);
    if (typeof type.getFields === 'function') {
      for (const f of Object.values(type.getFields())) {
        if (!f.description && !/(Connection|Edge)$/.test(type.name) && type.name !== 'PageInfo') missing.push(`${type.name}.${f.name}`);
      }
    }
  }
  assert.deepEqual(missing, []);
});
