// The pull request's one parity comment: found by its marker among the comments and updated on each
// push, created the first time. Called by actions/github-script in .github/workflows/parity.yml;
// scripts/ci_dry_run.py calls it with a recording stand-in for `github`.
const fs = require("fs");

const MARKER = "<!-- mlx-diar parity diff -->";
const LIMIT = 65000; // GitHub refuses comment bodies above 65536 characters

function commentBody(diffMarkdown, runUrl) {
  let text = diffMarkdown;
  const tail = `\n\n[Job summary and reports (artifact \`parity-reports\`)](${runUrl})\n`;
  if (text.length + tail.length + MARKER.length + 1 > LIMIT) {
    text = text.slice(0, LIMIT - tail.length - MARKER.length - 80) + "\n\n… (cut: the whole diff.md is in the artifact)";
  }
  return `${MARKER}\n${text}${tail}`;
}

async function upsert({ github, context, core, diffPath }) {
  const diff = fs.existsSync(diffPath)
    ? fs.readFileSync(diffPath, "utf8")
    : "## No diff\n\nThe diff step wrote no diff.md: see the workflow's log.";
  const runUrl = `${context.serverUrl}/${context.repo.owner}/${context.repo.repo}/actions/runs/${context.runId}`;
  const body = commentBody(diff, runUrl);
  const issue = { owner: context.repo.owner, repo: context.repo.repo, issue_number: context.issue.number };
  const comments = await github.paginate(github.rest.issues.listComments, { ...issue, per_page: 100 });
  const mine = comments.find((c) => c.user && c.user.type === "Bot" && (c.body || "").includes(MARKER));
  if (mine) {
    await github.rest.issues.updateComment({ owner: issue.owner, repo: issue.repo, comment_id: mine.id, body });
    core.info(`updated comment ${mine.id}`);
    return mine.id;
  }
  const created = await github.rest.issues.createComment({ ...issue, body });
  core.info(`created comment ${created.data.id}`);
  return created.data.id;
}

module.exports = { upsert, commentBody, MARKER };
