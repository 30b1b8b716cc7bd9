import sys, warnings, numpy as np, pandas as pd, zarr
warnings.filterwarnings("ignore")
sys.path.insert(0, "/work/main/src")
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from visual_ablation.data import splits, preparation
from visual_ablation.probes.standardisation import standardise
ROOT = "/work/main/results"
K=['dataset','backbone','representation','target','layer','probe','run']
a=pd.read_csv('/tmp/base/results/metrics.csv'); b=pd.read_csv(ROOT+'/metrics.csv')
a=a[(a.transfer=='none')&(a.probe=='linear')].set_index(K); b=b[(b.transfer=='none')&(b.probe=='linear')].set_index(K)
j=a[['weight_decay']].join(b[['weight_decay']], rsuffix='_new')
d=j[j.weight_decay!=j.weight_decay_new]
decays=(1e-3,3e-3,1e-2,3e-2,0.1,0.3,1.0,3.0,10.0)
tally={"old":0,"new":0,"neither":0,"constant":0}
for (dataset, backbone, rep, target, layer, probe, run), row in d.iterrows():
    g = zarr.open_group(f"{ROOT}/data/{dataset}.zarr", mode="r")
    labels, names = preparation.read_target(g, target, dataset)
    classes, fixed = g["labels"][:], preparation.read_fixed_test(g)
    within = splits.target_images(target, fixed)
    split = splits.run_splits(classes, {"val": 0.15, "test": 0.2, "seed": 0, "resample": True}, [0,1,2], dataset, fixed, within=within)[run]
    x = zarr.open_group(f"{ROOT}/features/{dataset}/{backbone}/{rep}.zarr", mode="r")[f"layers/{layer}"][:]
    tr = split == 0
    z = standardise(x, tr)
    if np.allclose(z[tr], 0):
        tally["constant"] += 1; continue
    losses = []
    for dc in decays:
        fit = LogisticRegression(C=1/(dc*tr.sum()), max_iter=50000, tol=1e-9).fit(z[tr], labels[tr])
        losses.append(log_loss(labels[split==1], fit.predict_proba(z[split==1]), labels=range(len(names))))
    best = decays[int(np.argmin(losses))]
    who = "old" if best == row.weight_decay else "new" if best == row.weight_decay_new else "neither"
    tally[who] += 1
    print(dataset, backbone, target, layer, run, "old", row.weight_decay, "new", row.weight_decay_new, "exact", best)
print(tally, "of", len(d))
