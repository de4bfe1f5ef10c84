#!/usr/bin/env bash
# Train generator variants on the pipeline's own corpus and run bench/mix_chain.py on each (built-in world):
# does a wider or spatially conditioned G draw two sources where the default draws one?
# Each variant is NAME or NAME:key=value,key=value (keys of params.yaml's `generator` block; values read as YAML).
# Needs the outputs of `dvc repro` up to train_audio_encoder (data/images, data/shards, data/embeddings,
# data/events.parquet and artifacts/{image_encoder,audio_encoder,evaluator}.pt). Every variant trains the same
# steps (`--steps`, default params.yaml's) with a wall-clock cap (`--minutes`, default 0: none); `--jobs N` trains
# N variants at once (a GPU: 3 at once ran 0.09-0.12 s a step each on one H200; on 2 CPU cores keep 1).
# Run it from the project root (it reads params.yaml, data/ and artifacts/ there); PYTHON names the interpreter.
# Writes bench_out/g_variants/<NAME>/{params.yaml,generator.pt,reports/,train.log,mix.log} and prints one table.
#   bench/g_variants.sh --steps 3000 A C:composites=0.5,feature_first=true,g_ch=32,d_ch=32
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)" py="${PYTHON:-python3}"
export PYTHONPATH="$repo:$repo/bench${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
steps="" minutes=0 jobs=1 out=bench_out/g_variants variants=()
while [ $# -gt 0 ]; do
  case "$1" in
    --steps|--minutes|--jobs|--out)
      [ $# -ge 2 ] || { echo "g_variants.sh: $1 needs a value" >&2; exit 2; }
      case "$1" in --steps) steps="$2" ;; --minutes) minutes="$2" ;; --jobs) jobs="$2" ;; --out) out="$2" ;; esac
      shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "g_variants.sh: unknown option $1" >&2; exit 2 ;;
    *) variants+=("$1"); shift ;;
  esac
done
[ ${#variants[@]} -gt 0 ] || { echo "g_variants.sh: name at least one variant, e.g. A or C:g_ch=32" >&2; exit 2; }
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "g_variants.sh: --jobs takes a whole number of at least 1, got $jobs" >&2; exit 2; }
[[ -z "$steps" || "$steps" =~ ^[1-9][0-9]*$ ]] || { echo "g_variants.sh: --steps takes a whole number of at least 1, got $steps" >&2; exit 2; }
[[ "$minutes" =~ ^[0-9]+([.][0-9]*)?$ ]] || { echo "g_variants.sh: --minutes takes a number of at least 0, got $minutes" >&2; exit 2; }
[ -f params.yaml ] || { echo "g_variants.sh: no params.yaml in $PWD: run it from the project root" >&2; exit 1; }
for f in data/images/train.npy data/events.parquet artifacts/image_encoder.pt artifacts/audio_encoder.pt \
         artifacts/evaluator.pt; do
  [ -e "$f" ] || { echo "g_variants.sh: $f does not exist: run \`dvc repro\` first" >&2; exit 1; }
done

names=()
for spec in "${variants[@]}"; do
  name="${spec%%:*}"; overrides=""; [ "$spec" != "$name" ] && overrides="${spec#*:}"
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "g_variants.sh: a variant's name is letters, digits, '_', '.' or '-': got '$name' in '$spec'" >&2; exit 2; }
  for seen in "${names[@]}"; do
    [ "$seen" != "$name" ] || { echo "g_variants.sh: two variants are named $name" >&2; exit 2; }
  done
  mkdir -p "$out/$name"; names+=("$name")
  "$py" - "$out/$name/params.yaml" "$steps" "$minutes" "$overrides" "$name" <<'PY' || exit 1
import sys, yaml
from pipeline.params import GeneratorParams, ParamsError, from_dict
dst, steps, minutes, overrides, name = sys.argv[1:]
p = yaml.safe_load(open("params.yaml"))
g = p["generator"]
for item in filter(None, overrides.split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in g:
        sys.exit(f"g_variants.sh: {item!r} is not key=value with a key of params.yaml's generator block")
    g[key] = yaml.safe_load(value)
g.update(minutes=float(minutes), **({"steps": int(steps)} if steps else {}))
try:
    from_dict(GeneratorParams, g, where="generator")
except ParamsError as e:
    sys.exit(f"g_variants.sh: variant {name}: {e}")
yaml.safe_dump(p, open(dst, "w"))
PY
done

train() {  # NAME: the stage on that variant's params, into its folder
  "$py" -m pipeline.cli stage train_generator --params "$out/$1/params.yaml" --encoder artifacts/image_encoder.pt \
    --images data/images --out "$out/$1/generator.pt" --reports "$out/$1/reports" > "$out/$1/train.log" 2>&1 \
    || { echo "g_variants.sh: variant $1 failed to train: $out/$1/train.log" >&2; return 1; }
}
pids=()  # at most `jobs` trainings at once; the first failure stops the script
for name in "${names[@]}"; do
  train "$name" & pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}" || exit 1; pids=("${pids[@]:1}"); fi
done
for pid in "${pids[@]}"; do wait "$pid" || exit 1; done
for name in "${names[@]}"; do
  "$py" "$repo/bench/mix_chain.py" --generator "$out/$name/generator.pt" --threads 2 > "$out/$name/mix.log" 2>&1 \
    || { echo "g_variants.sh: mix_chain failed for $name: $out/$name/mix.log" >&2; exit 1; }
done
"$py" - "$out" "${names[@]}" <<'PY'
import json, sys, yaml
out, names = sys.argv[1], sys.argv[2:]
print("| variant | generator overrides | steps (stopped by) | class acc | FID (encoder) | G(two-source frame feature) "
      "| G(unit(f_a + f_b)) | mix's audio feature: both nearest | mix_top2 |")
print("|---|---|---|---|---|---|---|---|---|")
base = yaml.safe_load(open("params.yaml"))["generator"]
for n in names:
    m = json.load(open(f"{out}/{n}/reports/metrics.json"))
    g = yaml.safe_load(open(f"{out}/{n}/params.yaml"))["generator"]
    diff = ", ".join(f"{k}={v}" for k, v in g.items() if base.get(k) != v and k not in ("steps", "minutes")) or "-"
    rows = [line.split("|")[-2].strip() for line in open(f"{out}/{n}/mix.log") if line.startswith("| ")][1:]
    print(f"| {n} | {diff} | {m['steps']} ({m['stopped_by']}) | {m['class_acc']:.3f} | {m['fid']:.1f} | "
          + " | ".join(rows[1:5]) + " |")
PY
