cd /work/main
export KILN_LIBRARY=$PWD/build-cpu/libkiln.so
V="--variant wino=- --variant direct=-,KILN_NO_WINOGRAD=1 --variant ort=ort"
for c in r50_3x3_56_64_b1 r50_3x3_28_128_b1 r50_3x3_14_256_b1 r50_3x3_28_128_b8 wg_3x3_20_96to160_b1 wg_3x3_112_24to64_b1 wg_3x3_16_256to128_b1 wg_3x3_32_48_b1 dn_3x3_28_128to32_b8 sq_fire_expand3x3_27_32to128_b8 sq_fire_expand3x3_55_16to64_b1; do
  for t in 1 2; do
    python3 bench/variants_ab.py $c --threads $t --rounds 3 --seconds 0.4 $V --json /tmp/wg/local/ab.jsonl 2>&1 | grep -v "^ *$" | tail -3
  done
done > /tmp/wg/local/convs.txt
for spec in resnet50.fp32.onnx:1:1 resnet50.fp32.onnx:1:2 resnet50.fp32.onnx:8:1 densenet121.onnx:1:1 densenet121.onnx:1:2 squeezenet.onnx:1:1 squeezenet.onnx:8:2; do
  IFS=: read -r m b t <<< "$spec"
  path=/tmp/cpu_models/$m; [ -f "$path" ] || path=/tmp/gpu_models/$m
  python3 bench/variants_ab.py "$path" --batch $b --threads $t --rounds 3 --seconds 1.0 $V --json /tmp/wg/local/ab.jsonl 2>&1 | grep -v "^ *$" | tail -3
done > /tmp/wg/local/models.txt
echo done > /tmp/wg/local/finished
