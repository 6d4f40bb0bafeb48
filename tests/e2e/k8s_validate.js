// Validate Kubernetes objects offline with the kubernetes-models package.
// stdin: a JSON array of objects. Prints one line per invalid object; exit 1 if any.
'use strict';
const fs = require('fs');

function model(apiVersion, kind) {
    const group = apiVersion.includes('/') ? apiVersion : 'v1';
    const mod = require('kubernetes-models/' + (apiVersion.includes('/') ? group : 'v1'));
    if (!mod[kind]) throw new Error('no model for ' + apiVersion + ' ' + kind);
    return mod[kind];
}

let bad = 0;
function check(obj, where) {
    if (obj.kind === 'List') {
        (obj.items || []).forEach((it, i) => check(it, where + '.items[' + i + ']'));
        return;
    }
    try {
        const Cls = model(obj.apiVersion, obj.kind);
        new Cls(obj).validate();
    } catch (e) {
        bad++;
        console.log(where + ' ' + obj.kind + ': ' + String(e.message || e).slice(0, 2000));
    }
}

const docs = JSON.parse(fs.readFileSync(0, 'utf8'));
docs.forEach((d, i) => check(d, 'doc' + i));
process.exit(bad ? 1 : 0);
