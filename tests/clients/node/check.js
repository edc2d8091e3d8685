// The real node-vault client, unmodified, against a leash server: the flows issue 13
// found broken (LIST auth/token/accessors, sys/auth and sys/mounts fields, the KV v2
// probe sys/internal/ui/mounts/<path> with a least-privilege token) and the everyday
// ones around them. Usage:
//
//   LEASH_ADDR=http://127.0.0.1:8200 LEASH_ROOT_TOKEN=... node check.js
//
// Prints one line per check and closes with "node-vault: N passed, M failed"; exits 1
// if any failed. Every name it creates carries a random suffix, so it can share a server.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const nodeVault = require('node-vault');

const endpoint = process.env.LEASH_ADDR || process.env.VAULT_ADDR;
const rootToken = process.env.LEASH_ROOT_TOKEN;
if (!endpoint || !rootToken) {
    console.error('node-vault check: set LEASH_ADDR and LEASH_ROOT_TOKEN');
    process.exit(2);
}
const sfx = crypto.randomBytes(4).toString('hex');
const vault = (token) => nodeVault({ apiVersion: 'v1', endpoint, token });
const root = vault(rootToken);

let passed = 0;
let failed = 0;
async function check(name, fn) {
    try {
        await fn();
        passed += 1;
        console.log(`ok - ${name}`);
    } catch (e) {
        failed += 1;
        const body = e.response ? ` (HTTP ${e.response.statusCode}: ${JSON.stringify(e.response.body)})` : '';
        console.log(`FAIL - ${name}: ${e.message}${body}`);
    }
}

async function rejects(promise, status, needle) {
    try {
        await promise;
    } catch (e) {
        assert.equal(e.response && e.response.statusCode, status, e.message);
        if (needle) {
            const all = JSON.stringify(e.response.body);
            assert.ok(all.includes(needle), `${all} lacks ${needle}`);
        }
        return;
    }
    assert.fail(`expected HTTP ${status}`);
}

async function main() {
    const db = `database-${sfx}`;
    const approle = `approle-${sfx}`;
    const policy = `agent-config-${sfx}`;
    const secretPath = `secret/data/agent/config-${sfx}`;
    let agentToken = '';
    let agentAccessor = '';

    await check('health', async () => {
        const h = await root.health();
        assert.equal(h.initialized, true);
        assert.equal(h.sealed, false);
    });
    await check('mounts: every secrets mount has an options object', async () => {
        const m = await root.mounts();
        assert.equal(m.data['secret/'].type, 'kv');
        assert.equal(m.data['secret/'].options.version, '2');
        for (const [p, e] of Object.entries(m.data)) {
            assert.equal(typeof e.options, 'object', p);
            assert.notEqual(e.options, null, p);
            assert.equal(typeof e.accessor, 'string', p);
            assert.equal(typeof e.uuid, 'string', p);
            assert.equal(typeof e.config.default_lease_ttl, 'number', p);
        }
    });
    await check('mount a database engine with options {}', async () => {
        await root.mount({ mount_point: db, type: 'database', options: {} });
        const m = await root.mounts();
        assert.deepEqual(m.data[`${db}/`].options, {});
        assert.equal(m.data[`${db}/`].type, 'database');
    });
    await check('auths: config.token_type on every method', async () => {
        await root.enableAuth({ mount_point: approle, type: 'approle', description: 'agents' });
        const a = await root.auths();
        assert.equal(a.data[`${approle}/`].type, 'approle');
        for (const [p, e] of Object.entries(a.data)) {
            assert.equal(e.config.token_type, 'default-service', p);
            assert.equal(typeof e.accessor, 'string', p);
        }
    });
    await check('policy: read on secret/data/agent/* only', async () => {
        await root.addPolicy({
            name: policy,
            rules: `path "secret/data/agent/*" { capabilities = ["read"] }`,
        });
        const p = await root.getPolicy({ name: policy });
        assert.ok((p.rules || p.data.rules).includes('secret/data/agent/*'));
    });
    await check('write a KV v2 secret as root', async () => {
        await root.write(secretPath, { data: { model: 'small', region: 'eu' } });
    });
    await check('create a least-privilege token', async () => {
        // node-vault switches the client that calls tokenCreate to the new token
        // (tokenSource), so a client of its own makes it.
        const t = await vault(rootToken).tokenCreate({ policies: [policy], display_name: `agent-${sfx}`, ttl: '10m' });
        agentToken = t.auth.client_token;
        agentAccessor = t.auth.accessor;
        assert.ok(agentToken && agentAccessor);
    });
    const agent = () => vault(agentToken);
    await check('least privilege: sys/internal/ui/mounts sees KV v2', async () => {
        const r = await agent().read(`sys/internal/ui/mounts/secret/agent/config-${sfx}`);
        assert.equal(r.data.type, 'kv');
        assert.equal(r.data.options.version, '2');
        assert.equal(r.data.path, 'secret/');
    });
    await check('least privilege: KV v2 read', async () => {
        const r = await agent().read(secretPath);
        assert.equal(r.data.data.model, 'small');
        assert.equal(r.data.metadata.version, 1);
    });
    await check('least privilege: sys/internal/ui/mounts of a mount it has nothing under is 403', async () => {
        await rejects(agent().read(`sys/internal/ui/mounts/${db}/creds/x`), 403);
    });
    await check('least privilege: tokenLookupSelf', async () => {
        const r = await agent().tokenLookupSelf();
        assert.equal(r.data.accessor, agentAccessor);
        assert.deepEqual(r.data.policies, ['default', policy].sort());
    });
    await check('least privilege: tokenAccessors is refused (sudo)', async () => {
        await rejects(agent().tokenAccessors(), 403, 'permission denied');
    });
    await check('tokenAccessors lists the live tokens', async () => {
        const r = await root.tokenAccessors();
        assert.ok(Array.isArray(r.data.keys));
        assert.ok(r.data.keys.includes(agentAccessor), 'the new token is listed');
    });
    await check('tokenLookupAccessor', async () => {
        const r = await root.tokenLookupAccessor({ accessor: agentAccessor });
        assert.equal(r.data.display_name, `token-agent-${sfx}`);
    });
    await check('tokenRevokeAccessor, then it is gone from tokenAccessors', async () => {
        await root.tokenRevokeAccessor({ accessor: agentAccessor });
        const r = await root.tokenAccessors();
        assert.ok(!r.data.keys.includes(agentAccessor));
    });
    await check('a revoked token is refused with the reason', async () => {
        await rejects(agent().read(secretPath), 403, 'token is not valid');
    });
    await check('no token: refused with the reason', async () => {
        await rejects(vault('').read(secretPath), 403, 'no token presented');
    });
    await check('a missing key is 404 saying where', async () => {
        await rejects(root.read(`secret/data/agent/nothing-${sfx}`), 404, `secret/data/agent/nothing-${sfx}`);
    });
    await check('list KV v2 metadata', async () => {
        const r = await root.list('secret/metadata/agent/');
        assert.ok(r.data.keys.includes(`config-${sfx}`));
    });
    await check('delete, unmount and disable what it made', async () => {
        await root.delete(`secret/metadata/agent/config-${sfx}`);
        await root.unmount({ mount_point: db });
        await root.disableAuth({ mount_point: approle });
        await root.removePolicy({ name: policy });
        const m = await root.mounts();
        assert.equal(m.data[`${db}/`], undefined);
    });

    console.log(`node-vault: ${passed} passed, ${failed} failed`);
    process.exit(failed === 0 ? 0 : 1);
}

main().catch((e) => {
    console.log(`FAIL - unexpected: ${e.stack || e}`);
    console.log(`node-vault: ${passed} passed, ${failed + 1} failed`);
    process.exit(1);
});
