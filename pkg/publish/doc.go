// Package publish stages the images of a gated change in the target
// registry (Upload, the docker_image_upload module) and publishes them once
// the change merged (Promote, the docker_image_promote module), as
// zuul-jobs' upload-docker-image and promote-docker-image roles do, on
// Docker Hub or any OCI registry.
//
// # Tags
//
// The gate uploads <repository>:change_<N>_<tag> (zuul.Vars.StagingTag;
// <pipeline>_<tag> when the item has no change). Promote points
// <repository>:<tag> at the staged manifest and deletes the staging tag;
// it also sweeps staging tags (zuul.IsStagingTag) older than a limit, by
// real elapsed time: Docker Hub's last_updated, or, on registries without
// tag times, the creation time of the image (upstream's sweep compared a
// timedelta's .seconds and never fired).
//
// # Copies keep digests
//
// Upload copies manifest bytes from the buildset registry with package
// transfer, so an index keeps its digest and every platform; nothing is
// rebuilt. Promote GETs the staged manifest and PUTs the same bytes under
// the final tag: no blob moves, and the final tag's digest is the staging
// tag's.
//
// # Nothing half-published
//
// Both read everything before writing anything: the repository
// restriction (RepositoryPattern), every source image, every staging tag,
// push permission on every target repository. Any problem fails the whole
// call with a message naming each image and tag.
//
// # An interrupted promote
//
// Promote writes every final tag before deleting any staging tag, so a
// staging tag is gone only if its final tag was written. Run again, it
// recognises a final tag written by the earlier run from the image label
// org.zuul-ci.change=<N> (ChangeLabel) that the build puts on every image
// of a change; see Promote.
//
// # Tag deletion
//
// On Docker Hub tags are deleted through its web API (package dockerhub);
// elsewhere with DELETE /v2/<name>/manifests/<tag>. A registry that cannot
// delete a single tag (distribution 2.8) gets a warning: deleting by
// digest would take the promoted tag along.
//
// Every HTTP request goes through package transfer's retry policy; the
// credentials stay in memory and are never logged.
package publish
