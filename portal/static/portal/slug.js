// A slug field with data-slug-from="<id of the name field>" fills itself from the name as it is typed,
// until the person edits the slug themselves (or it already had a value: an existing object's slug stays).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[data-slug-from]").forEach(function (slug) {
    var source = document.getElementById(slug.dataset.slugFrom);
    if (!source) return;
    var touched = slug.value !== "";
    slug.addEventListener("input", function () { touched = slug.value !== ""; });
    source.addEventListener("input", function () {
      if (touched) return;
      slug.value = source.value
        .normalize("NFKD").replace(/[\u0300-\u036f]/g, "")
        .toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 50);
    });
  });
});
