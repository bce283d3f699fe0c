// "Select all on this page": <input type="checkbox" data-select-all="NAME"> ticks or clears every checkbox
// named NAME in its form, and follows them (ticked when all are, mixed when some are). A static file: the
// Content-Security-Policy forbids inline scripts.
(function () {
  "use strict";
  function boxes(all) {
    var form = all.form || document;
    return Array.prototype.filter.call(
      form.querySelectorAll('input[type="checkbox"]'),
      function (box) { return box.name === all.dataset.selectAll; }
    );
  }
  function follow(all) {
    var list = boxes(all);
    var ticked = list.filter(function (box) { return box.checked; }).length;
    all.checked = list.length > 0 && ticked === list.length;
    all.indeterminate = ticked > 0 && ticked < list.length;
    var count = document.querySelector('[data-selected-count="' + all.dataset.selectAll + '"]');
    if (count) { count.textContent = String(ticked); }
  }
  function init() {
    document.querySelectorAll("input[data-select-all]").forEach(function (all) {
      all.addEventListener("change", function () {
        boxes(all).forEach(function (box) { box.checked = all.checked; });
        follow(all);
      });
      boxes(all).forEach(function (box) {
        box.addEventListener("change", function () { follow(all); });
      });
      follow(all);
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
