"""The console's HTML, rendered by pure functions from the cluster's records.

Every value that a user or a device chose (names, labels, zones, images, messages) passes
through ``e()`` (HTML escaping, quotes included) before it reaches the page; numbers are
formatted here. A page is a layout around a fragment; the fragment alone is what the
browser re-fetches to update in place.
"""

from __future__ import annotations

import html
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cloudless.coordinator.state.cluster_view import ClusterView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState

NAV = (("/ui/", "Overview"), ("/ui/nodes", "Nodes"), ("/ui/workloads", "Workloads"))


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def cores(millis: int) -> str:
    return f"{millis / 1000:.1f}"


def gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    """Cells are trusted HTML: callers escape what they put in them."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{e(empty)}</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def layout(title: str, fragment_url: str, fragment: str, who: str) -> str:
    nav = "".join(f'<a href="{e(href)}">{e(name)}</a>' for href, name in NAV)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{e(title)} - Cloudless</title>
<style>{CSS}</style></head>
<body><header><strong>Cloudless</strong><nav>{nav}</nav><span class="who">{e(who)}</span></header>
<main><h1>{e(title)}</h1>
<div id="live"{f' data-src="{e(fragment_url)}"' if fragment_url else ""}>{fragment}</div>
<h2>Events</h2><ul id="events"></ul></main>
<script>{JS}</script></body></html>"""


def overview(view: ClusterView) -> str:
    nodes = [n for n in view.nodes.values() if n.state is not NodeState.REMOVED]
    by_state = Counter(n.state.value for n in nodes)
    zones: dict[str, Counter[str]] = {}
    for n in nodes:
        zones.setdefault(n.zone or "(none)", Counter())[n.state.value] += 1
    ready = [n for n in nodes if n.state is NodeState.READY]
    alloc_cpu = sum(n.allocatable.cpu_millis for n in ready)
    used_cpu = sum(n.usage.cpu_millis for n in ready)
    alloc_mem = sum(n.allocatable.memory_bytes for n in ready)
    used_mem = sum(n.usage.memory_bytes for n in ready)
    wanted = [r for r in view.replicas.values() if r.desired is DesiredState.RUNNING]
    running = sum(r.observed is ReplicaState.RUNNING for r in wanted)
    live_workloads = [w for w in view.workloads.values() if not w.deleted]
    states = " ".join(
        f'<span class="pill {e(s)}">{e(s)} {k}</span>' for s, k in sorted(by_state.items())
    )
    zone_rows = [
        (e(z), " ".join(f"{e(s)}: {k}" for s, k in sorted(c.items())))
        for z, c in sorted(zones.items())
    ]
    return f"""<section class="cards">
<div class="card"><h3>Nodes</h3><p class="big" id="nodes-total">{len(nodes)}</p>
<p>{states}</p></div>
<div class="card"><h3>Workloads</h3><p class="big">{len(live_workloads)}</p>
<p><span id="replicas-running">{running}</span> of {len(wanted)} replicas running</p></div>
<div class="card"><h3>CPU (ready nodes)</h3>
<p class="big">{cores(used_cpu)} / {cores(alloc_cpu)}</p>
<p>cores in use / allocatable</p></div>
<div class="card"><h3>Memory (ready nodes)</h3>
<p class="big">{gib(used_mem)} / {gib(alloc_mem)}</p>
<p>in use / allocatable</p></div></section>
<h2>Zones</h2>{table(("zone", "nodes by state"), zone_rows, "no nodes yet")}"""


def nodes_page(view: ClusterView) -> str:
    per_node = Counter(
        r.node_id for r in view.replicas.values() if r.desired is DesiredState.RUNNING
    )
    rows = []
    for n in sorted(view.nodes.values(), key=lambda n: (n.zone, n.name, n.id)):
        if n.state is NodeState.REMOVED:
            continue
        conds = ", ".join(n.conditions.active()) or "none"
        labels = " ".join(f"<code>{e(k)}={e(v)}</code>" for k, v in sorted(n.labels.items()))
        rows.append(
            (
                f'<span title="{e(n.id)}">{e(n.name or n.id)}</span>',
                f'<span class="pill {e(n.state.value)}">{e(n.state.value)}</span>',
                e(n.zone),
                e(n.device_class),
                f"{cores(n.usage.cpu_millis)} / {cores(n.allocatable.cpu_millis)}",
                f"{gib(n.usage.memory_bytes)} / {gib(n.allocatable.memory_bytes)}",
                e(conds),
                f"{n.reliability:.2f}",
                str(per_node.get(n.id, 0)),
                labels,
            )
        )
    headers = (
        "node",
        "state",
        "zone",
        "class",
        "CPU used/alloc",
        "memory used/alloc",
        "conditions",
        "reliability",
        "replicas",
        "labels",
    )
    return table(headers, rows, "no nodes yet: enroll one with `cloudless token create`")


def workloads_page(view: ClusterView) -> str:
    rows = []
    for name, rec in sorted(view.workloads.items()):
        if rec.deleted:
            continue
        reps = [
            r
            for r in view.replicas.values()
            if r.workload == name and r.desired is DesiredState.RUNNING
        ]
        running = sum(r.observed is ReplicaState.RUNNING for r in reps)
        rows.append(
            (
                f'<a href="/ui/workloads/{e(name)}">{e(name)}</a>',
                e(rec.spec.image),
                f'<span class="count">{running}/{rec.spec.replicas}</span>',
                str(rec.version),
                e(rec.unplaced_reason) if rec.unplaced else "",
                e(when(rec.updated_at)),
            )
        )
    headers = ("workload", "image", "running", "version", "unplaced", "updated")
    return table(headers, rows, "no workloads yet: `cloudless apply -f app.yaml`")


def workload_page(
    rec: WorkloadRecord, replicas: Sequence[Replica], nodes: Mapping[str, Node], explain: str
) -> str:
    rows = []
    for r in sorted(replicas, key=lambda r: r.id):
        n = nodes.get(r.node_id)
        rows.append(
            (
                e(r.id),
                e(n.name if n else r.node_id),
                e(r.desired.value),
                f'<span class="pill {e(r.observed.value)}">{e(r.observed.value)}</span>',
                e(r.reason),
                str(r.restarts),
                e(r.endpoint),
                f'<a href="/ui/replicas/{e(r.id)}/logs">logs</a>',
            )
        )
    headers = ("replica", "node", "desired", "observed", "reason", "restarts", "endpoint", "")
    current = sum(r.spec_version == rec.version for r in replicas)
    rollout = (
        f"version {rec.version}: {current} of {len(replicas)} replicas on it"
        if replicas
        else f"version {rec.version}"
    )
    spec = json.dumps(_spec_summary(rec), indent=1)
    return f"""<p>Image <code>{e(rec.spec.image)}</code>, {rec.spec.replicas} replicas wanted;
roll-out: {e(rollout)}.{" Unplaced: " + e(rec.unplaced_reason) if rec.unplaced else ""}</p>
{table(headers, rows, "no replicas yet")}
<h2>Placement</h2><pre>{e(explain)}</pre>
<h2>Spec</h2><pre>{e(spec)}</pre>"""


def _spec_summary(rec: WorkloadRecord) -> dict[str, Any]:
    from cloudless.model.workload_codec import workload_to_dict

    return workload_to_dict(rec.spec)


def logs_page(replica_id: str) -> str:
    return f"""<p>Logs of replica <code>{e(replica_id)}</code> (following).</p>
<pre id="logs" data-src="/ui/replicas/{e(replica_id)}/logs/stream"></pre>"""


def error_page(status: int, message: str) -> str:
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<link rel="icon" href="data:,"><title>{status} - Cloudless</title><style>{CSS}</style></head>
<body><main><h1>{status}</h1><p class="error">{e(message)}</p></main></body></html>"""


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{display:flex;gap:1.5em;align-items:center;padding:.6em 1.2em;background:#1d2330;color:#fff}
header a{color:#cfe1ff;margin-right:1em;text-decoration:none}.who{margin-left:auto;opacity:.7}
main{padding:1em 1.5em}table{border-collapse:collapse;background:#fff;width:100%}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#eef1f5}.cards{display:flex;gap:1em;flex-wrap:wrap}
.card{background:#fff;padding:.6em 1em;border-radius:6px;min-width:12em;box-shadow:0 1px 2px #0002}
.big{font-size:1.8em;margin:.2em 0}.pill{padding:0 .5em;border-radius:1em;background:#e3e6ea}
.ready,.running{background:#d4f5dc}.offline,.failed,.lost{background:#fbd9d9}
.draining,.cordoned,.departed,.pending,.pulling,.starting{background:#fff0c2}
#events{list-style:none;padding:0;font-family:monospace;max-height:14em;overflow:auto}
pre{background:#fff;padding:.6em;overflow:auto;max-height:30em}.error{color:#a00}
"""

# Re-fetch the live fragment when an event arrives (and every 5 s regardless); show the
# event feed; follow a replica's logs. Text is inserted with textContent, never as HTML.
JS = """
const live=document.getElementById('live');
async function refresh(){if(!live||!live.dataset.src)return;
try{const r=await fetch(live.dataset.src,{credentials:'same-origin'});
if(r.ok){live.innerHTML=await r.text();}}catch(e){}}
let pending=null;
function soon(){if(!pending){pending=setTimeout(()=>{pending=null;refresh();},200);}}
setInterval(refresh,5000);
const list=document.getElementById('events');
const es=new EventSource('/ui/events');
es.onmessage=(m)=>{let d={};try{d=JSON.parse(m.data);}catch(e){return;}
const li=document.createElement('li');const t=new Date((d.at||0)*1000).toISOString().slice(11,19);
li.textContent=t+' '+(d.kind||'')+' '+(d.message||'');list.prepend(li);
while(list.children.length>100){list.removeChild(list.lastChild);}soon();};
const logs=document.getElementById('logs');
if(logs){fetch(logs.dataset.src,{credentials:'same-origin'}).then(async(r)=>{
const rd=r.body.getReader();const dec=new TextDecoder();
for(;;){const {done,value}=await rd.read();if(done)break;logs.textContent+=dec.decode(value);}});}
"""
