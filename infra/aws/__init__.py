"""The AWS side of medistream as one CDK app (issue 22): stacks split by lifetime and blast radius.

`python -m infra.aws.app --environment dev|prod` is the app the CDK CLI runs (cdk.json here);
`medistream infra synth|check` (tools/infra.py) drives it. Names, tables, key domains and thresholds
are read from the files the code itself reads (conf/, schemas/phi, schemas/partners, ops/alerts.yaml).
"""
