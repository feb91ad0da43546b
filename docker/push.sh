#!/usr/bin/env bash
# Push IMAGE:TAG to ECR as :TAG and :GIT_SHA; creates the repository if missing.
# Account and region come from your AWS config (aws sts / aws configure), or AWS_REGION.
#   docker/push.sh imgclf latest 1a2b3c4
set -euo pipefail
name=${1:?image name}; tag=${2:-latest}; sha=${3:-$(git rev-parse --short HEAD)}
region=${AWS_REGION:-$(aws configure get region || true)}
[ -n "$region" ] || { echo "no AWS region: set AWS_REGION or run 'aws configure'" >&2; exit 1; }
account=$(aws sts get-caller-identity --query Account --output text)
registry="$account.dkr.ecr.$region.amazonaws.com"
aws ecr describe-repositories --region "$region" --repository-names "$name" >/dev/null 2>&1 \
  || aws ecr create-repository --region "$region" --repository-name "$name" >/dev/null
aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"
for t in "$tag" "$sha"; do
  docker tag "$name:$tag" "$registry/$name:$t"
  docker push "$registry/$name:$t"
done
echo "pushed $registry/$name:$tag and :$sha"
