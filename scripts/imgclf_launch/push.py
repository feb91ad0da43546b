"""Push the image to Amazon ECR with boto3 (no AWS CLI): the repository is created if missing, docker
logs in with ECR's token, and IMAGE:TAG goes up as :TAG and :GIT_SHA.

    python -m imgclf_launch.push imgclf latest 1a2b3c4      (make push)
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys

from . import aws_errors
from .flags import LaunchError


def docker(*args: str, stdin: str | None = None) -> None:
    result = subprocess.run(["docker", *args], input=stdin, text=True, capture_output=stdin is not None)
    if result.returncode != 0:
        raise LaunchError(f"docker {args[0]} failed ({(result.stderr or '').strip() or f'exit {result.returncode}'})")


def login(ecr) -> str:
    """docker login to the account's registry with an ECR token (valid 12 hours); returns the registry host."""
    data = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    registry = data["proxyEndpoint"].removeprefix("https://")
    docker("login", "--username", user, "--password-stdin", registry, stdin=password)
    return registry


def ensure_repository(ecr, name: str) -> None:
    try:
        ecr.describe_repositories(repositoryNames=[name])
    except ecr.exceptions.RepositoryNotFoundException:
        ecr.create_repository(repositoryName=name)
        print(f"created ECR repository {name}")


@aws_errors.one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the local image name, also the ECR repository")
    parser.add_argument("tag", nargs="?", default="latest")
    parser.add_argument("sha", help="the git commit, pushed as a second tag")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION"))
    args = parser.parse_args(argv)
    import boto3

    session = boto3.Session(region_name=args.region)
    if not session.region_name:
        raise LaunchError("no AWS region: set AWS_REGION, pass --region, or set region in ~/.aws/config")
    ecr = session.client("ecr")
    ensure_repository(ecr, args.name)
    registry = login(ecr)
    for tag in (args.tag, args.sha):
        docker("tag", f"{args.name}:{args.tag}", f"{registry}/{args.name}:{tag}")
        docker("push", f"{registry}/{args.name}:{tag}")
    print(f"pushed {registry}/{args.name}:{args.tag} and :{args.sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
